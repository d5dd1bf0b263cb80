//! Side by side, in one run: Switchyard against the hand-written Node BFF and Tailcall over
//! one standalone sandbox, and the transport ceiling, as `shared/bench/compare.sh` runs them
//! (read its header: the peers, the workloads, what each column means). This bench runs that
//! script on the `switchyard` binary cargo just built and prints its lines and its markdown
//! table of ratios, the table the README shows.
//!
//! `cargo bench --bench side_by_side` (about 10 minutes). The script is found at
//! `$SWITCHYARD_PEERS/compare.sh`, by default `../shared/bench/` beside the checkout. Sizes:
//! `SIDE_BY_SIDE_SECONDS` per run (6), `SIDE_BY_SIDE_CONNECTIONS` (16); `LAT` puts that
//! many ms on every upstream call. It needs `wrk`, `node` and npm (the peers' packages are
//! installed into a scratch folder when theirs has none).

use std::path::PathBuf;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let project = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let peers = std::env::var_os("SWITCHYARD_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| project.join("../shared/bench"));
    let script = peers.join("compare.sh");
    if !script.is_file() {
        eprintln!(
            "side_by_side: no {} (set SWITCHYARD_PEERS to the folder with compare.sh, \
             peer-node and peer-tailcall)",
            script.display()
        );
        return ExitCode::FAILURE;
    }
    let seconds = std::env::var("SIDE_BY_SIDE_SECONDS").unwrap_or_else(|_| "6".into());
    let connections = std::env::var("SIDE_BY_SIDE_CONNECTIONS").unwrap_or_else(|_| "16".into());
    // compare.sh runs `$PROJECT/target/release/switchyard`: it must be the binary this
    // bench was built with (the bench profile builds into target/release).
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_switchyard"));
    let expected = project.join("target/release/switchyard");
    if binary.canonicalize().ok() != expected.canonicalize().ok() {
        eprintln!(
            "side_by_side: compare.sh runs {}, but this bench was built as {} (run it with \
             `cargo bench` and the default target dir)",
            expected.display(),
            binary.display()
        );
        return ExitCode::FAILURE;
    }
    let status = Command::new("bash")
        .arg(&script)
        .arg(&seconds)
        .arg(&connections)
        .env("PROJECT", &project)
        .current_dir(&project)
        .status();
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("side_by_side: compare.sh ended with {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("side_by_side: could not run bash: {e}");
            ExitCode::FAILURE
        }
    }
}
