//! The planner's documented examples are what the command line prints. Every `$ anychip ...`
//! command in a plain fenced block of docs/planner.md whose arguments are all written out is run
//! (from a scratch folder holding the repository's `examples/`, so `--out charts` writes there),
//! and its output, stdout then stderr, is compared line by line with the lines under it; "..."
//! in a documented line stands for any text, and a command shown without output must succeed. A change to the model, the calibration or a message
//! that moves a documented figure fails here until the docs say it.

use anychip_test_support::scratch;
use std::path::Path;
use std::process::Command;

/// One documented command and the output printed under it.
struct Example {
    /// Line of the command in the document, for the failure message.
    line: usize,
    /// The words after `$ anychip`.
    args: Vec<String>,
    /// The lines under it, up to the next command or the end of the block.
    expected: Vec<String>,
}

/// The `$ anychip` commands of `doc`'s plain fenced blocks (blocks naming a language, such as
/// ```` ```toml ````, hold files, not sessions).
fn examples(doc: &str) -> Vec<Example> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut out: Vec<Example> = Vec::new();
    let (mut in_block, mut plain) = (false, false);
    // Whether the block being read has shown a command yet: lines before it are not output.
    let mut open = false;
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.starts_with("```") {
            (in_block, plain) = if in_block { (false, false) } else { (true, l.trim() == "```") };
            open = false;
        } else if in_block && plain && l.starts_with("$ anychip ") {
            let (line, mut command) = (i + 1, l.to_string());
            while command.ends_with('\\') && i + 1 < lines.len() {
                command.pop();
                i += 1;
                command.push(' ');
                command.push_str(lines[i].trim());
            }
            let args = command.split_whitespace().skip(2).map(str::to_string).collect();
            out.push(Example { line, args, expected: Vec::new() });
            open = true;
        } else if in_block && plain && open {
            if let Some(last) = out.last_mut() {
                last.expected.push(l.to_string());
            }
        }
        i += 1;
    }
    out
}

/// Whether `actual` reads as the documented `expected` line, each "..." in it standing for any
/// text.
fn matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.trim_end().split("...").collect();
    let actual = actual.trim_end();
    if parts.len() == 1 {
        return expected.trim_end() == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || !actual.ends_with(last) || actual.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(at) => rest = &rest[at + p.len()..],
            None => return false,
        }
    }
    true
}

/// Whether `args` succeeds run in `dir`, and what it prints, stdout then stderr.
fn output_of(args: &[String], dir: &Path) -> (bool, Vec<String>) {
    let o = Command::new(env!("CARGO_BIN_EXE_anychip")).args(args).current_dir(dir).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), text.lines().map(str::to_string).collect())
}

/// The first line where `actual` departs from `expected`, as a message; `None` when they agree.
fn first_difference(expected: &[String], actual: &[String]) -> Option<String> {
    for (n, e) in expected.iter().enumerate() {
        match actual.get(n) {
            Some(a) if matches(e, a) => {}
            Some(a) => return Some(format!("line {} of its output:\n  documented: {e}\n  printed:    {a}", n + 1)),
            None => return Some(format!("the output ends before documented line {}: {e}", n + 1)),
        }
    }
    (actual.len() > expected.len()).then(|| format!("it prints more than documented: {}", actual[expected.len()]))
}

#[test]
fn planner_examples_print_what_the_docs_show() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/planner.md")).unwrap();
    let dir = scratch("docs-examples");
    std::os::unix::fs::symlink(root.join("examples").canonicalize().unwrap(), dir.join("examples")).unwrap();
    let all = examples(&doc);
    let runnable: Vec<&Example> = all.iter().filter(|e| !e.args.iter().any(|a| a.contains("..."))).collect();
    assert!(runnable.len() >= 7, "expected the planner's examples, found {} runnable of {}", runnable.len(), all.len());
    let mut failures = Vec::new();
    for e in &runnable {
        let (ok, printed) = output_of(&e.args, &dir);
        let why = if e.expected.is_empty() {
            (!ok).then(|| format!("shown without output, it fails: {}", printed.join(" / ")))
        } else {
            first_difference(&e.expected, &printed)
        };
        if let Some(why) = why {
            failures.push(format!("docs/planner.md:{} `anychip {}`: {why}", e.line, e.args.join(" ")));
        }
    }
    println!(
        "{} documented commands run, {} with elided arguments left out",
        runnable.len(),
        all.len() - runnable.len()
    );
    assert!(failures.is_empty(), "documented examples differ from what the CLI prints:\n{}", failures.join("\n"));
}

#[test]
fn a_documented_line_matches_only_what_it_says() {
    assert!(matches("error: chip ppu: x (...); supply it", "error: chip ppu: x (not disclosed (Alibaba)); supply it"));
    assert!(!matches("error: chip ppu: x (...); supply it", "error: chip ppu: y (z); supply it"));
    assert!(!matches("step 13.94 s", "step 13.95 s"));
    let e = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(first_difference(&e(&["a", "b"]), &e(&["a", "b"])).is_none());
    assert!(first_difference(&e(&["a", "b"]), &e(&["a", "c"])).is_some());
    assert!(first_difference(&e(&["a"]), &e(&["a", "extra"])).is_some());
    assert!(first_difference(&e(&[]), &e(&["anything"])).is_some());
    let doc = "```\n$ anychip plan --a 1 \\\n    --b 2\nout 1\n$ anychip chips\n```\n```toml\n$ anychip no\n```\n```\nnot output\n```\n";
    let found = examples(doc);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].args, ["plan", "--a", "1", "--b", "2"]);
    assert_eq!(found[0].expected, ["out 1"]);
    assert!(found[1].expected.is_empty(), "a later block without a command is not its output");
}
