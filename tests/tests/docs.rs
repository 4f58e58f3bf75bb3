//! The guides in docs/ quote code from the tested examples, so the code cannot rot: every
//! fenced block preceded by `<!-- include: PATH#REGION -->` must equal the lines between the
//! `docs:start:REGION` and `docs:end:REGION` marker comments of PATH (relative to the
//! repository root). To refresh the guides after changing an example, run
//!
//! ```text
//! RTLLM_UPDATE_DOCS=1 cargo test -p rtllm-tests --test docs
//! ```

use rtllm_tests::repo_root;
use std::path::Path;

const GUIDES: &[&str] =
    &["docs/writing-a-kernel-plugin.md", "docs/adding-an-architecture.md", "docs/defining-a-model-in-toml.md"];

const INCLUDE: &str = "<!-- include: ";
const REFRESH: &str = "RTLLM_UPDATE_DOCS=1 cargo test -p rtllm-tests --test docs";

/// The lines of `file` between the `docs:start:region` and `docs:end:region` markers (other
/// regions' marker lines inside are left out), dedented by their common indentation, each
/// ending in a newline.
fn region(file: &Path, region: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let (start, end) = (format!("docs:start:{region}"), format!("docs:end:{region}"));
    let is_marker = |l: &str, m: &str| l.trim_end().ends_with(m);
    let mut lines = text.lines();
    if !lines.any(|l| is_marker(l, &start)) {
        return Err(format!("{} has no `{start}` marker", file.display()));
    }
    let mut body: Vec<&str> = Vec::new();
    for line in lines {
        if is_marker(line, &end) {
            return Ok(dedent(&body));
        }
        if !line.contains("docs:start:") && !line.contains("docs:end:") {
            body.push(line);
        }
    }
    Err(format!("{} has no `{end}` marker after `{start}`", file.display()))
}

/// The lines without their common leading spaces, joined with newlines.
fn dedent(lines: &[&str]) -> String {
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start_matches(' ').len())
        .min()
        .unwrap_or(0);
    lines.iter().map(|l| format!("{}\n", l.get(indent..).unwrap_or("").trim_end())).collect()
}

/// One include in a guide: the 0-based line of the opening fence and of the closing one.
#[derive(Debug)]
struct Include {
    target: String,
    open: usize,
    close: usize,
}

fn includes(guide: &str, lines: &[&str]) -> Result<Vec<Include>, String> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim().strip_prefix(INCLUDE) else {
            continue;
        };
        let target = rest
            .strip_suffix("-->")
            .map(str::trim)
            .ok_or_else(|| format!("{guide}:{}: unclosed include comment", i + 1))?;
        let open = i + 1;
        if !lines.get(open).is_some_and(|l| l.starts_with("```")) {
            return Err(format!("{guide}:{}: an include must be followed by a ``` fenced block", i + 1));
        }
        let close = (open + 1..lines.len())
            .find(|&j| lines[j].trim_end() == "```")
            .ok_or_else(|| format!("{guide}:{}: the fenced block is not closed", open + 1))?;
        out.push(Include { target: target.to_string(), open, close });
    }
    Ok(out)
}

fn resolve(target: &str) -> Result<String, String> {
    let (path, name) = target.split_once('#').ok_or_else(|| format!("include `{target}` must be PATH#REGION"))?;
    region(&repo_root().join(path), name)
}

/// Checks (or, with RTLLM_UPDATE_DOCS=1, rewrites) one guide; returns its problems.
fn check_guide(guide: &str, update: bool) -> Vec<String> {
    let path = repo_root().join(guide);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => return vec![format!("cannot read {guide}: {e}")],
    };
    let lines: Vec<&str> = text.lines().collect();
    let found = match includes(guide, &lines) {
        Ok(f) => f,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    let mut rebuilt: Vec<String> = Vec::new();
    let mut next = 0;
    for inc in &found {
        let quoted: String = lines[inc.open + 1..inc.close].iter().map(|l| format!("{l}\n")).collect();
        rebuilt.extend(lines[next..=inc.open].iter().map(|l| l.to_string()));
        match resolve(&inc.target) {
            Ok(want) => {
                if quoted != want {
                    problems.push(format!("{guide}:{}: block differs from {}", inc.open + 1, inc.target));
                }
                rebuilt.extend(want.lines().map(str::to_string));
            }
            Err(e) => {
                problems.push(format!("{guide}:{}: {e}", inc.open));
                rebuilt.extend(quoted.lines().map(str::to_string));
            }
        }
        next = inc.close;
    }
    rebuilt.extend(lines[next..].iter().map(|l| l.to_string()));
    if update && !problems.is_empty() {
        let mut out = rebuilt.join("\n");
        out.push('\n');
        if let Err(e) = std::fs::write(&path, out) {
            problems.push(format!("cannot write {guide}: {e}"));
        } else {
            problems.retain(|p| !p.contains("block differs"));
        }
    }
    problems
}

#[test]
fn guides_quote_the_examples_exactly() {
    let update = std::env::var_os("RTLLM_UPDATE_DOCS").is_some_and(|v| v == "1");
    let problems: Vec<String> = GUIDES.iter().flat_map(|g| check_guide(g, update)).collect();
    assert!(
        problems.is_empty(),
        "{}\n\nThe guides quote the examples; refresh them with:\n  {REFRESH}",
        problems.join("\n")
    );
}

#[test]
fn every_guide_includes_code_and_the_plugin_guide_names_the_tools() {
    for guide in GUIDES {
        let text = std::fs::read_to_string(repo_root().join(guide)).unwrap_or_else(|e| panic!("{guide}: {e}"));
        let lines: Vec<&str> = text.lines().collect();
        let found = includes(guide, &lines).unwrap_or_else(|e| panic!("{e}"));
        assert!(found.len() >= 3, "{guide} quotes {} regions", found.len());
        assert!(text.contains("RTLLM_PLUGIN_PATH"), "{guide} does not mention RTLLM_PLUGIN_PATH");
    }
    let plugin_guide = std::fs::read_to_string(repo_root().join(GUIDES[0])).unwrap_or_default();
    assert!(plugin_guide.contains("rtllm plugins check"), "the plugin guide must show `rtllm plugins check`");
}

#[test]
fn regions_are_found_and_bad_includes_are_reported() {
    let dir = std::env::temp_dir().join(format!("rtllm-docs-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("x.rs");
    std::fs::write(
        &file,
        "a\n// docs:start:r\n    b\n  // docs:start:inner\n      c\n\n  // docs:end:inner\n// docs:end:r\n",
    )
    .unwrap();
    assert_eq!(region(&file, "r").unwrap(), "b\n  c\n\n");
    assert_eq!(region(&file, "inner").unwrap(), "c\n\n");
    assert!(region(&file, "missing").unwrap_err().contains("no `docs:start:missing` marker"));
    let lines = ["<!-- include: x.rs#r -->", "text"];
    assert!(includes("g.md", &lines).unwrap_err().contains("fenced block"));
    let lines = ["<!-- include: x.rs#r -->", "```rust", "b"];
    assert!(includes("g.md", &lines).unwrap_err().contains("not closed"));
    let _ = std::fs::remove_dir_all(&dir);
}
