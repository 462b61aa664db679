//! Shared test helpers: the repository root, the real base model (fetched
//! once per cache with the product's own fetch code) and the `bankbot` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use bankbot::paths::Paths;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bot/ has a parent")
        .to_path_buf()
}

/// The same paths the binary resolves from the environment.
pub fn paths() -> Paths {
    Paths::resolve(
        std::env::var_os("BANKBOT_CACHE_DIR").map(PathBuf::from),
        std::env::var_os("BANKBOT_BASE_MODEL").map(PathBuf::from),
    )
}

/// The base model directory, fetched (and verified) on first use.
pub fn base_model() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        bankbot::nlu::ensure_base_model(&paths(), true).expect("the base model can be fetched")
    })
    .clone()
}

/// The repository's own catalogue, trained once per test binary (with the
/// real binary, as staff would).
pub fn repo_model() -> &'static Path {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &MODEL
        .get_or_init(|| {
            base_model();
            let dir = tempfile::tempdir().expect("tempdir");
            let m = dir.path().join("model");
            let out = bankbot()
                .args(["train", "--intents", "intents", "--out"])
                .arg(&m)
                .output()
                .expect("run bankbot train");
            assert!(out.status.success(), "train failed: {}", stderr(&out));
            (dir, m)
        })
        .1
}

/// `bankbot` run from the repository root.
pub fn bankbot() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bankbot"));
    c.current_dir(repo_root());
    c
}

/// Runs a command with `stdin` and returns its output.
pub fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().expect("stdin is piped");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer thread");
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `files` into a fresh directory.
pub fn write_tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, body) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
        std::fs::write(p, body).expect("write");
    }
    dir
}

/// A small valid catalogue: three intents with twelve examples each and
/// some out-of-scope examples.
pub fn small_catalogue() -> tempfile::TempDir {
    let modeline = "# yaml-language-server: $schema=intent.schema.json\n";
    let intent = |name: &str, examples: &[&str]| {
        let mut s = format!("{modeline}intent: {name}\nexamples:\n");
        for e in examples {
            s.push_str(&format!("  - {e}\n"));
        }
        s
    };
    let balance = intent(
        "check_balance",
        &[
            "what is my balance",
            "how much money do I have",
            "show my account balance",
            "balance please",
            "how much is left in my current account",
            "what's in my savings",
            "am I overdrawn right now",
            "tell me my available funds",
            "current balance",
            "how much cash have I got in the bank",
            "check my balance",
            "what do I have left this month",
        ],
    );
    let lost = intent(
        "card_lost",
        &[
            "I lost my card",
            "my card was stolen",
            "someone took my debit card",
            "can't find my card anywhere",
            "my wallet with my card got nicked",
            "card missing",
            "I think I left my card at the bar",
            "my credit card has been stolen",
            "lost card",
            "I dropped my card somewhere",
            "block my stolen card",
            "my bag was taken with my cards in it",
        ],
    );
    let hours = intent(
        "branch_hours",
        &[
            "when does the branch open",
            "opening hours",
            "is the branch open on saturday",
            "what time do you close today",
            "where is the nearest branch",
            "branch opening times",
            "are you open on sundays",
            "what time does the bank open tomorrow",
            "find a branch near me",
            "how late is the branch open",
            "closest branch to the station",
            "opening times for the high street branch",
        ],
    );
    let oos = intent(
        "out_of_scope",
        &[
            "what's the weather tomorrow",
            "tell me something funny",
            "who won the cup final",
            "how do I bake bread",
            "play some music",
            "what is the capital of peru",
            "book me a taxi",
            "how tall is a giraffe",
            "recommend a film",
            "translate hello into german",
        ],
    );
    write_tree(&[
        ("check_balance.yaml", &balance),
        ("card_lost.yaml", &lost),
        ("branch_hours.yaml", &hours),
        ("out_of_scope.yaml", &oos),
    ])
}
