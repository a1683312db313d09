//! The macros' compile errors: each case in `tests/ui` is a mistake a module author
//! makes, and its `.stderr` is the error they get, pointing at the offending field,
//! attribute or argument.

#[test]
fn macro_mistakes_are_compile_errors() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
