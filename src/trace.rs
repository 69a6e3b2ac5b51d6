//! Wall-clock marks of a run's steps on standard error when `NEXTSTAT_TRACE` is set: for
//! profiling where a command's time goes (engine start-up, uploads, launches, copies, host
//! work) on a machine where a profiler is not at hand. Off, a mark costs one branch.

use std::sync::OnceLock;
use std::time::Instant;

/// The moment the first trace of the process started: marks also say how far into the run
/// they are.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Whether `NEXTSTAT_TRACE` is set (read once).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("NEXTSTAT_TRACE").is_some())
}

/// Marks of one piece of work: each [`Trace::mark`] prints the time since the previous mark
/// (or the start) and since the process's first trace.
pub struct Trace {
    what: &'static str,
    last: Option<Instant>,
}

impl Trace {
    pub fn start(what: &'static str) -> Self {
        let last = enabled().then(|| {
            origin();
            Instant::now()
        });
        Trace { what, last }
    }

    /// [`Trace::mark`] with a step name built only when tracing is on.
    pub fn mark_with(&mut self, step: impl FnOnce() -> String) {
        if self.last.is_some() {
            self.mark(&step());
        }
    }

    pub fn mark(&mut self, step: &str) {
        if let Some(t) = self.last {
            let now = Instant::now();
            eprintln!(
                "[trace {}] {step}: {:.3} ms (at {:.3} ms)",
                self.what,
                (now - t).as_secs_f64() * 1e3,
                (now - origin()).as_secs_f64() * 1e3
            );
            self.last = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_that_is_off_builds_no_step_names() {
        let mut off = Trace {
            what: "test",
            last: None,
        };
        off.mark_with(|| panic!("the step name was built with tracing off"));
        off.mark("nothing printed");
        assert!(off.last.is_none());
    }
}
