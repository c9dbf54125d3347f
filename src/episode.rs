//! Trouble that lasts or keeps coming back (a dependency down, `accept` failing, every
//! connection slot taken): logged when it begins, again at most every 30 s while it
//! lasts, and once when it ends, rather than once per attempt. [`Episode`] keeps the
//! time; its users choose the words.

use std::time::{Duration, Instant};

/// How often trouble that lasts is logged again.
const REPEAT: Duration = Duration::from_secs(30);

/// One kind of trouble, over time.
#[derive(Debug, Default)]
pub struct Episode {
    since: Option<Instant>,
    logged_at: Option<Instant>,
}

impl Episode {
    /// It happened (again). Some(how long it has lasted) when that is to be logged now:
    /// at the first time, then at most every 30 s.
    pub fn happened(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        if self.logged_at.is_some_and(|at| now - at < REPEAT) {
            return None;
        }
        self.logged_at = Some(now);
        Some(now - since)
    }

    /// It is over. Some(how long it lasted) when it was going on, to be logged.
    pub fn ended(&mut self) -> Option<Duration> {
        self.logged_at = None;
        self.since.take().map(|since| since.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_when_it_begins_not_again_at_once_and_when_it_ends() {
        let mut episode = Episode::default();
        assert_eq!(episode.ended(), None, "nothing happened yet");
        assert!(episode.happened().is_some());
        assert_eq!(episode.happened(), None, "within 30 s of the last line");
        assert!(episode.ended().is_some());
        assert_eq!(episode.ended(), None, "ended once");
        assert!(episode.happened().is_some(), "a new one is logged at once");
    }
}
