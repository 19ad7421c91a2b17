//! Time spent inside each operator, from timely's own event log, for benchmarks
//! (`STOCKFLOW_PROFILE_OPERATORS=1`).

use std::cell::RefCell;
use std::rc::Rc;

/// Time spent inside each operator (excluding the operators nested in it), from timely's own
/// event log. Enabled by `STOCKFLOW_PROFILE_OPERATORS=1`; benchmarks use it to find the time.
#[derive(Default)]
pub struct OperatorProfile {
    names: std::collections::HashMap<usize, String>,
    own: std::collections::HashMap<usize, std::time::Duration>,
    /// Operators being scheduled, innermost last, with the time they (re)started.
    stack: Vec<(usize, std::time::Duration)>,
}

impl OperatorProfile {
    pub fn report(&self, worker: usize) {
        let mut rows: Vec<_> = self.own.iter().map(|(id, d)| (*d, *id)).collect();
        rows.sort_by(|a, b| b.cmp(a));
        let total: f64 = rows.iter().map(|(d, _)| d.as_secs_f64()).sum();
        tracing::info!("operator profile, worker {worker}: {total:.2} s scheduled");
        for (d, id) in rows.iter().take(30) {
            let name = self.names.get(id).map_or("?", String::as_str);
            tracing::info!("{:8.3} s {:5.1}%  {name} ({id})", d.as_secs_f64(), 100.0 * d.as_secs_f64() / total);
        }
    }
}

pub fn operator_profile(worker: &mut timely::worker::Worker) -> Option<Rc<RefCell<OperatorProfile>>> {
    use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};
    std::env::var_os("STOCKFLOW_PROFILE_OPERATORS")?;
    let profile = Rc::new(RefCell::new(OperatorProfile::default()));
    let shared = Rc::clone(&profile);
    worker.log_register()?.insert::<TimelyEventBuilder, _>("timely", move |_, data| {
        let Some(data) = data else { return };
        let mut p = shared.borrow_mut();
        for (at, event) in data.iter() {
            match event {
                TimelyEvent::Operates(o) => {
                    p.names.insert(o.id, o.name.clone());
                }
                TimelyEvent::Schedule(s) => match s.start_stop {
                    StartStop::Start => {
                        if let Some(&(outer, since)) = p.stack.last() {
                            *p.own.entry(outer).or_default() += *at - since;
                        }
                        p.stack.push((s.id, *at));
                    }
                    StartStop::Stop => {
                        if let Some((id, since)) = p.stack.pop() {
                            *p.own.entry(id).or_default() += *at - since;
                        }
                        if let Some(outer) = p.stack.last_mut() {
                            outer.1 = *at;
                        }
                    }
                },
                _ => {}
            }
        }
    });
    Some(profile)
}

