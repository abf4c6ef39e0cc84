//! Slow, read-only probes of the user's environment (`rustc -vV`, `git status`) run once per
//! directory and process, and started in the background ahead of need so that they overlap
//! with cargo's own work. A later call for the same probe and directory waits for the running
//! one and shares its answer.

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

type Answer = Arc<dyn Any + Send + Sync>;
type Cells = Mutex<HashMap<(&'static str, PathBuf), Arc<OnceLock<Answer>>>>;

/// The answer of `probe` in `dir`, computed at most once per process for each `kind`.
/// `kind` names the probe; each kind must always be used with the same `probe`.
pub fn once<T>(kind: &'static str, dir: &Path, probe: fn(&Path) -> T) -> T
where
    T: Clone + Send + Sync + 'static,
{
    static CELLS: OnceLock<Cells> = OnceLock::new();
    let cell = {
        let mut cells = CELLS
            .get_or_init(Cells::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Arc::clone(cells.entry((kind, dir.to_path_buf())).or_default())
    };
    let answer = cell.get_or_init(|| Arc::new(probe(dir)) as Answer);
    match answer.downcast_ref::<T>() {
        Some(t) => t.clone(),
        // Only a kind reused with another answer type gets here: answer afresh.
        None => probe(dir),
    }
}

/// Starts [`once`] in the background.
pub fn start<T>(kind: &'static str, dir: &Path, probe: fn(&Path) -> T)
where
    T: Clone + Send + Sync + 'static,
{
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        once(kind, &dir, probe);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static RUNS: AtomicUsize = AtomicUsize::new(0);

    fn slow(dir: &Path) -> String {
        RUNS.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(50));
        dir.display().to_string()
    }

    #[test]
    fn runs_once_per_directory_even_when_started_early() {
        let a = Path::new("/prefetch-test/a");
        start("test probe", a, slow);
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(move || once("test probe", a, slow)))
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), "/prefetch-test/a");
        }
        assert_eq!(
            once("test probe", Path::new("/prefetch-test/b"), slow),
            "/prefetch-test/b"
        );
        assert_eq!(RUNS.load(Ordering::SeqCst), 2);
    }
}
