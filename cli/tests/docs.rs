//! The examples in `docs/` are tested: every ```console block's `$` lines run, in
//! order, against a server on an ephemeral port, and their output (stdout, then
//! stderr) must match the text below them. In the expected text, `[..]` matches any
//! part of a line and a line `...` any number of lines. A block whose output has an
//! `error:` line expects the command to fail; any other, to succeed.
//!
//! Commands run with `sh -c` in a scratch directory holding a link to the examples, with
//! `tickdb` on the PATH, `http://127.0.0.1:3000` replaced by the test server's
//! address (the CLI's default server also points there), and `$TOKEN` set to the
//! CLI's token for it, as the docs tell readers to set it.

use std::path::{Path, PathBuf};
use std::process::Command;

use tickdb_engine::store::DataDir;

/// One command and what it must print.
#[derive(Debug)]
struct Example {
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// The examples of a markdown file, in order.
fn examples(markdown: &str) -> Vec<Example> {
    let mut out: Vec<Example> = Vec::new();
    let mut in_console = false;
    for (i, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_console = line.trim() == "```console";
            continue;
        }
        if !in_console {
            continue;
        }
        match line.strip_prefix("$ ") {
            Some(command) => out.push(Example { line: i + 1, command: command.into(), expected: Vec::new() }),
            None => out.last_mut().expect("a console block starts with a command").expected.push(line.into()),
        }
    }
    out
}

/// Whether `line` matches `pattern`, where `[..]` matches anything.
fn line_matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("[..]").collect();
    if parts.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first) || !line[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Whether `lines` match `patterns`, where a pattern `...` matches any run of lines.
fn lines_match(patterns: &[String], lines: &[&str]) -> bool {
    match patterns.split_first() {
        None => lines.is_empty(),
        Some((p, rest)) if p == "..." => (0..=lines.len()).any(|skip| lines_match(rest, &lines[skip..])),
        Some((p, rest)) => {
            lines.first().is_some_and(|l| line_matches(p, l)) && lines_match(rest, &lines[1..])
        }
    }
}

fn token(config: &Path, server: &str) -> String {
    let Ok(bytes) = std::fs::read(config) else { return String::new() };
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("the config is JSON");
    json["servers"][server]["token"].as_str().unwrap_or_default().to_string()
}

fn run_doc(doc: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap();
    let work = std::env::temp_dir().join(format!("tickdb-docs-{doc}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    std::os::unix::fs::symlink(root.join("examples"), work.join("examples")).unwrap();
    let server = tickdb_net::start(
        tickdb_net::ServerConfig::default(),
        DataDir::new(work.join("data")),
        "127.0.0.1:0".parse().unwrap(),
    )
    .expect("the server starts");
    let url = format!("http://{}", server.addr());
    let config = work.join("config.json");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tickdb"));
    let path = format!("{}:{}", bin.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    // Builds share the test modules' target directory: the chat module is built there.
    let target =
        tickdb_test_modules::wasm_path("tickdb-example-chat").ancestors().nth(3).unwrap().to_path_buf();
    let markdown = std::fs::read_to_string(root.join("docs").join(doc)).unwrap();
    let examples = examples(&markdown);
    assert!(!examples.is_empty(), "docs/{doc} has no examples");
    for example in examples {
        let command = example.command.replace("http://127.0.0.1:3000", &url);
        let out = Command::new("sh")
            .arg("-c")
            .arg(&command)
            .current_dir(&work)
            .env("PATH", &path)
            .env("TICKDB_SERVER", &url)
            .env("TICKDB_CONFIG", &config)
            .env("TOKEN", token(&config, &url))
            .env("CARGO_TARGET_DIR", &target)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let text = text.replace(&url, "http://127.0.0.1:3000");
        let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        let expected: Vec<String> = example.expected.iter().map(|l| l.trim_end().to_string()).collect();
        let should_fail = expected.iter().any(|l| l.starts_with("error:"));
        assert!(
            lines_match(&expected, &lines) && out.status.success() != should_fail,
            "docs/{doc}:{}: `{}` {} and printed:\n{text}\nexpected:\n{}",
            example.line,
            example.command,
            if out.status.success() { "succeeded" } else { "failed" },
            expected.join("\n")
        );
    }
    server.stop();
    let _ = std::fs::remove_dir_all(&work);
}

/// Every example in the CLI's documentation prints what it says.
#[test]
fn the_cli_docs_examples_hold() {
    run_doc("cli.md");
}

/// Every example in the HTTP API's documentation prints what it says.
#[test]
fn the_http_api_docs_examples_hold() {
    run_doc("http-api.md");
}

#[test]
fn wildcards_match_what_they_say() {
    assert!(line_matches("identity [..] on http://[..]", "identity 3fa2 on http://127.0.0.1:3000"));
    assert!(!line_matches("identity [..] on https", "identity 3fa2 on http://x"));
    assert!(line_matches("[..]", "anything"));
    let lines = ["a", "b", "c", "d"];
    assert!(lines_match(&["a".into(), "...".into(), "d".into()], &lines));
    assert!(!lines_match(&["a".into(), "...".into(), "c".into()], &lines));
    assert!(lines_match(&["...".into()], &[]));
}
