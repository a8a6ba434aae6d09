//! Keeps `docs/CONFORMANCE.md` true: every row names tests (`file::name`, never a file
//! alone), every test a row names exists, and a row naming an ignored test says GAP (or
//! "deliberate": a rule hearth chose not to follow, whose test documents what following it
//! would mean).

use std::path::Path;

/// The backticked `path::…::name` references of one table row.
fn references(row: &str) -> Vec<(&str, Option<&str>)> {
    row.split('`')
        .skip(1)
        .step_by(2)
        .filter(|r| r.starts_with("tests/") || r.starts_with("src/"))
        .map(|r| match r.split_once("::") {
            Some((file, rest)) => (file, Some(rest.rsplit("::").next().unwrap_or(rest))),
            None => (r, None),
        })
        .collect()
}

/// Whether `name` is a test function in `source`, and whether it is ignored.
fn find_test(source: &str, name: &str) -> Option<bool> {
    let at = source.find(&format!("fn {name}("))?;
    let before = &source[..at];
    let attrs_start = before
        .rfind("#[test]")
        .filter(|&t| !before[t..].contains("\n}\n"))?;
    Some(before[attrs_start..].contains("#[ignore"))
}

#[test]
fn every_row_names_a_test_that_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/CONFORMANCE.md")).unwrap();
    let mut rows = 0;
    for row in doc
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| §"))
    {
        rows += 1;
        let status = row.split(" | ").nth(2).unwrap_or_default();
        for (file, name) in references(row) {
            let path = root.join(file);
            let Some(name) = name else {
                panic!("{file} names no test: every row names the test that checks it: {row}");
            };
            let source = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{file}: {e} (row: {row})"));
            let ignored = find_test(&source, name)
                .unwrap_or_else(|| panic!("no test `{name}` in {file}: {row}"));
            assert!(
                !ignored || status.contains("GAP") || status.contains("deliberate"),
                "`{name}` is ignored but the row does not say GAP or deliberate: {row}"
            );
        }
    }
    assert!(rows > 100, "only {rows} rows found");
}
