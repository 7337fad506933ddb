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
    // Every number is a float: integer constants never truncate.
    assert!(c("cpu_used_pct > 1/2").is_ok());
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

fn eval_num(text: &str, cpu: f64) -> Result<f64, EvalError> {
    let e = compile(text, &TEST_SCOPE, Kind::Number).unwrap_or_else(|e| panic!("{e}"));
    let mut b = Bindings::new(&TEST_SCOPE);
    b.set_num(0, cpu);
    b.set_num(1, 0.0);
    e.eval_f64(&b)
}

fn eval_cond(text: &str, cpu: f64, template: &str) -> bool {
    let e = c(text).unwrap_or_else(|e| panic!("{e}"));
    let tpl = Text::new(template);
    let mut b = Bindings::new(&TEST_SCOPE);
    b.set_num(0, cpu);
    b.set_num(1, 0.0);
    b.set_text(2, &tpl);
    e.eval_bool(&b).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn numbers_compare_by_value_whatever_mix_of_ints_and_floats() {
    // Metrics are floats, literals may be integers: equality is by value.
    assert!(eval_cond("cpu_used_pct == 0", 0.0, ""));
    assert!(eval_cond("cpu_used_pct == 0.0", 0.0, ""));
    assert!(!eval_cond("cpu_used_pct != 10", 10.0, ""));
    assert!(eval_cond("cpu_used_pct != 10", 10.5, ""));
    assert!(eval_cond("len(template) == 4", 0.0, "base"));
    assert!(eval_cond("1 == 1.0 && 2 / 4 == 0.5", 0.0, ""));
    assert!(eval_cond("contains((1, 2.0, 3), cpu_used_pct)", 2.0, ""));
}

#[test]
fn non_finite_values_are_errors_not_numbers() {
    for (text, want_nan) in [
        ("cpu_used_pct / age_s", false),
        ("age_s / age_s", true),
        ("math::sqrt(cpu_used_pct - 100)", true),
        ("cpu_used_pct ^ 1000", false),
    ] {
        let err = eval_num(text, 50.0).unwrap_err();
        let v = err.non_finite.unwrap_or_else(|| panic!("{text}: {err}"));
        assert_eq!(v.is_nan(), want_nan, "{text}: {v}");
        assert!(err.to_string().contains("not a finite number"), "{err}");
    }
    // A condition whose operands are not finite fails rather than reading false.
    let e = c("cpu_used_pct / age_s > 80").unwrap();
    let mut b = Bindings::new(&TEST_SCOPE);
    b.set_num(0, 50.0);
    b.set_num(1, 0.0);
    assert!(e.eval_bool(&b).unwrap_err().non_finite.is_some());
    // Huge constants that are not finite are refused at load.
    assert!(matches!(
        c("cpu_used_pct > 1e400"),
        Err(ExprError::Type { .. })
    ));
    assert_eq!(eval_num("cpu_used_pct * 2", 21.0), Ok(42.0));
}

#[test]
fn branch_and_operand_types_are_checked_at_load() {
    let e = compile("if(cpu_used_pct > 1, \"x\", 1)", &TEST_SCOPE, Kind::Number).unwrap_err();
    assert!(
        e.to_string()
            .contains("if's branches must have the same type"),
        "{e}"
    );
    let e = c("if(cpu_used_pct > 1, \"x\", 1) == 1").unwrap_err();
    assert!(matches!(e, ExprError::Type { .. }), "{e}");
    assert!(matches!(c("template == 3"), Err(ExprError::Type { .. })));
    assert!(matches!(c("template > 3"), Err(ExprError::Type { .. })));
    assert!(matches!(c("!cpu_used_pct"), Err(ExprError::Type { .. })));
    assert!(matches!(
        c("max(template) > 1"),
        Err(ExprError::Type { .. })
    ));
    assert!(c("if(cpu_used_pct > 1, template, \"b\") == \"base\"").is_ok());
    assert!(c("template + \"x\" == \"basex\"").is_ok());
}

#[test]
fn contains_works_on_text_and_on_tuples() {
    assert!(eval_cond("contains(template, \"as\")", 0.0, "base"));
    assert!(!eval_cond("contains(template, \"xyz\")", 0.0, "base"));
    assert!(eval_cond(
        "contains((\"a\", \"base\"), template)",
        0.0,
        "base"
    ));
    assert!(!eval_cond(
        "contains((\"a\", \"b\"), template)",
        0.0,
        "base"
    ));
    assert!(eval_cond("contains(metadata.x, \"\")", 0.0, ""));
    assert!(matches!(
        c("contains(template, 3)"),
        Err(ExprError::Type { .. })
    ));
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
            // ... or fails only on a value that is not a finite number (missing data).
            if let Err(err) = e.eval_bool(&b) {
                prop_assert!(err.non_finite.is_some(), "{} failed at run time: {}", text, err);
            }
        }
    }
}
