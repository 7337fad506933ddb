//! Tests of expression compilation and evaluation, with property tests that no input panics.

use super::*;
use proptest::prelude::*;

static TEST_SCOPE: Scope = Scope {
    name: "sandbox",
    vars: &[
        ("cpu_used_pct", VarType::Number),
        ("age_s", VarType::Number),
        ("template", VarType::Text),
    ],
    metadata: true,
};

fn c(text: &str) -> Result<Expr, ExprError> {
    compile(text, &TEST_SCOPE, Kind::Bool)
}

#[test]
fn compiles_and_evaluates() {
    let e = c("cpu_used_pct > 80 && template == \"base\"").unwrap();
    let tpl = Text::new("base");
    let mut b = Bindings::new(&TEST_SCOPE);
    b.set_num(0, 85.0);
    b.set_num(1, 10.0);
    b.set_text(2, &tpl);
    assert!(e.eval_bool(&b).unwrap());
    b.set_num(0, 80.0);
    assert!(!e.eval_bool(&b).unwrap());
}

#[test]
fn metadata_reads_as_text_and_is_empty_when_absent() {
    let e = c("metadata.pool == \"web\"").unwrap();
    let mut meta = BTreeMap::new();
    meta.insert("pool".to_string(), "web".to_string());
    let m = Meta::new(&meta);
    let mut b = Bindings::new(&TEST_SCOPE);
    b.set_meta(&m);
    assert!(e.eval_bool(&b).unwrap());
    let empty = Meta::default();
    b.set_meta(&empty);
    assert!(!e.eval_bool(&b).unwrap());
    assert!(c("metadata.protected == \"\"").is_ok());
}

#[test]
fn closes_evalexpr_traps() {
    // Parses, fails only when evaluated: caught at compile time.
    assert!(matches!(
        c("cpu_used_pct > && 3"),
        Err(ExprError::Syntax { .. } | ExprError::Type { .. })
    ));
    // Integer division truncates.
    assert!(matches!(
        c("cpu_used_pct > 1/2"),
        Err(ExprError::IntegerDivision { .. })
    ));
    assert!(matches!(
        c("cpu_used_pct > 7 % 2"),
        Err(ExprError::IntegerDivision { .. })
    ));
    assert!(c("cpu_used_pct > 1.0/2").is_ok());
    assert!(c("cpu_used_pct / 2 > 1").is_ok(), "variables are floats");
    // Both sides of && are checked even though evalexpr would evaluate them anyway.
    assert!(matches!(
        c("true && template > 3"),
        Err(ExprError::Type { .. })
    ));
    // Nesting and length are capped before parsing.
    let deep = format!("{}cpu_used_pct > 1{}", "(".repeat(200), ")".repeat(200));
    assert!(matches!(c(&deep), Err(ExprError::TooDeep { .. })));
    let long = format!("cpu_used_pct > {}", "1+".repeat(400)) + "1";
    assert!(matches!(c(&long), Err(ExprError::TooLong { .. })));
    // No writes.
    assert!(matches!(
        c("cpu_used_pct = 3"),
        Err(ExprError::Assignment { .. })
    ));
    assert!(matches!(
        c("a = 1; true"),
        Err(ExprError::Assignment { .. })
    ));
}

#[test]
fn unknown_names_are_listed() {
    match c("cpu > 80") {
        Err(ExprError::UnknownVariable { name, valid, .. }) => {
            assert_eq!(name, "cpu");
            assert!(
                valid.contains("cpu_used_pct") && valid.contains("metadata.<key>"),
                "{valid}"
            );
        }
        other => panic!("{other:?}"),
    }
    let e = c("str::regex_matches(template, \"b.*\")").unwrap_err();
    assert!(e.to_string().contains("valid functions: min, max"), "{e}");
    assert!(c("max(cpu_used_pct, age_s) > 3").is_ok());
}

#[test]
fn kinds_are_enforced() {
    assert!(matches!(
        c("cpu_used_pct + 1"),
        Err(ExprError::WrongKind { .. })
    ));
    assert!(compile("cpu_used_pct + 1", &TEST_SCOPE, Kind::Number).is_ok());
    assert!(matches!(
        compile("template", &TEST_SCOPE, Kind::Number),
        Err(ExprError::WrongKind { .. })
    ));
    assert!(matches!(c("   "), Err(ExprError::Empty)));
}

#[test]
fn numbers_render_as_people_write_them() {
    assert_eq!(format_number(80.0), "80");
    assert_eq!(format_number(0.6251), "0.63");
    assert_eq!(format_number(0.5), "0.5");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_text_panics_the_compiler(s in "[ -~]{0,80}") {
        let _ = c(&s);
        let _ = compile(&s, &TEST_SCOPE, Kind::Number);
    }

    #[test]
    fn operator_soup_never_panics(parts in proptest::collection::vec(prop_oneof![
        Just("cpu_used_pct"), Just("age_s"), Just("template"), Just("metadata.x"), Just("("), Just(")"),
        Just("&&"), Just("||"), Just("!"), Just("-"), Just("+"), Just("*"), Just("/"), Just("%"), Just("^"),
        Just(">"), Just("=="), Just("1"), Just("2.5"), Just("\"s\""), Just(","), Just("max"), Just("if"),
        Just("true"), Just("="), Just(";"),
    ], 0..40)) {
        let text = parts.join(" ");
        if let Ok(e) = c(&text) {
            // Whatever compiles evaluates without error on typed values of its scope.
            let tpl = Text::new("base");
            let meta = Meta::default();
            let mut b = Bindings::new(&TEST_SCOPE);
            b.set_num(0, 42.0);
            b.set_num(1, 0.0);
            b.set_text(2, &tpl);
            b.set_meta(&meta);
            prop_assert!(e.eval_bool(&b).is_ok(), "{} failed at run time", text);
        }
    }
}
