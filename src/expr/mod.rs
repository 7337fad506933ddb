//! Rule expressions. evalexpr (pinned at 11.3.1, its last MIT release) only parses; this
//! module, the only one that imports it, lowers its tree into a typed [`ast::Ast`] and evaluates
//! that itself, so the rule language's promises do not depend on evalexpr's quirks:
//! - every expression is type-checked when a rule file loads, every branch of every `if`
//!   included, and must yield its kind (boolean for conditions, number for metrics);
//! - every number is a float: `busy_count == 0` and `size != 10` compare values, and `1/2` is
//!   0.5;
//! - a value that is not a finite number (`0.0 / 0`, `math::sqrt(-1)`, overflow), or a variable
//!   without data, makes the evaluation fail with [`EvalError`], which the engine treats as
//!   missing data and never as a value;
//! - errors carry no position: messages name the expression and the offending name instead;
//! - deep nesting would overflow the stack: length and nesting depth are capped before parsing.
//!
//! Unknown variables and functions are rejected by name, listing the valid ones. Assignments and
//! `;` chains are rejected: rules read, they never write.

mod ast;

use std::collections::BTreeMap;
use std::fmt;

use std::borrow::Cow;

use evalexpr::{Node, Operator};

use ast::{Ast, Fail, Ty, Val};

/// Longest expression accepted, in bytes.
pub const MAX_LEN: usize = 512;
/// Deepest parenthesis nesting accepted.
pub const MAX_DEPTH: usize = 24;

/// The functions rules may call (evalexpr builtins), everything else is rejected.
pub const FUNCTIONS: &[&str] = &[
    "min",
    "max",
    "floor",
    "ceil",
    "round",
    "math::abs",
    "math::sqrt",
    "if",
    "contains",
    "len",
    "str::to_lowercase",
    "str::to_uppercase",
    "str::trim",
];

/// The type of a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarType {
    Number,
    Text,
}

/// The variables one kind of rule can read: a fixed, documented list.
#[derive(Debug)]
pub struct Scope {
    pub name: &'static str,
    pub vars: &'static [(&'static str, VarType)],
    /// Whether `metadata.<key>` (text, empty when absent) may be read.
    pub metadata: bool,
}

impl Scope {
    /// The slot of a variable in [`Bindings`], by name.
    pub fn slot(&self, name: &str) -> Option<usize> {
        self.vars.iter().position(|(n, _)| *n == name)
    }

    /// Every name a rule of this scope may use, for error messages.
    pub fn valid_names(&self) -> String {
        let mut names: Vec<&str> = self.vars.iter().map(|(n, _)| *n).collect();
        if self.metadata {
            names.push("metadata.<key>");
        }
        names.join(", ")
    }
}

/// What an expression must evaluate to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Number,
}

/// Why an expression was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExprError {
    #[error("expression is {len} bytes long; the limit is {MAX_LEN}")]
    TooLong { len: usize },
    #[error("expression nests parentheses {depth} deep; the limit is {MAX_DEPTH}")]
    TooDeep { depth: usize },
    #[error("expression is empty")]
    Empty,
    #[error("cannot parse {text:?}: {reason}")]
    Syntax { text: String, reason: String },
    #[error("unknown variable {name:?} in {text:?}; valid variables for {scope} rules: {valid}")]
    UnknownVariable {
        name: String,
        text: String,
        scope: &'static str,
        valid: String,
    },
    #[error("unknown function {name:?} in {text:?}; valid functions: {}", FUNCTIONS.join(", "))]
    UnknownFunction { name: String, text: String },
    #[error("{text:?} assigns or chains (`=`, `+=`, `;`...); rules may only read values")]
    Assignment { text: String },
    #[error("{text:?} does not type-check: {reason}")]
    Type { text: String, reason: String },
    #[error("{text:?} is {found}, but a {wanted} is needed here")]
    WrongKind {
        text: String,
        found: &'static str,
        wanted: &'static str,
    },
}

/// A compiled, checked expression.
#[derive(Debug, Clone)]
pub struct Expr {
    ast: Ast,
    /// The names it reads, in order of first use.
    variables: Vec<String>,
    text: String,
    kind: Kind,
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.kind == other.kind
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A text value, converted once so that evaluations do not allocate.
#[derive(Debug, Clone, PartialEq)]
pub struct Text(String);

impl Text {
    pub fn new(s: &str) -> Text {
        Text(s.to_string())
    }
}

/// Metadata values, converted once per sandbox or event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta(BTreeMap<String, String>);

impl Meta {
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> Meta {
        Meta(
            pairs
                .into_iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }
}

/// The values of one scope's variables for one evaluation. Filling it does not allocate.
pub struct Bindings<'a> {
    scope: &'static Scope,
    values: Vec<Slot<'a>>,
    meta: Option<&'a Meta>,
}

#[derive(Clone, Copy)]
enum Slot<'a> {
    Unset,
    Num(f64),
    Text(&'a str),
}

impl<'a> Bindings<'a> {
    pub fn new(scope: &'static Scope) -> Self {
        Bindings {
            scope,
            values: vec![Slot::Unset; scope.vars.len()],
            meta: None,
        }
    }

    pub fn scope(&self) -> &'static Scope {
        self.scope
    }

    /// Sets a number by slot (see [`Scope::slot`]).
    pub fn set_num(&mut self, slot: usize, v: f64) {
        if let Some(s) = self.values.get_mut(slot) {
            *s = Slot::Num(v);
        }
    }

    pub fn set_text(&mut self, slot: usize, v: &'a Text) {
        if let Some(s) = self.values.get_mut(slot) {
            *s = Slot::Text(&v.0);
        }
    }

    /// Clears a slot: an expression that reads it then fails (counted as "no data").
    pub fn unset(&mut self, slot: usize) {
        if let Some(s) = self.values.get_mut(slot) {
            *s = Slot::Unset;
        }
    }

    /// A number by slot.
    pub fn num_at(&self, slot: usize) -> Option<f64> {
        match self.values.get(slot)? {
            Slot::Num(f) => Some(*f),
            _ => None,
        }
    }

    pub fn set_meta(&mut self, meta: &'a Meta) {
        self.meta = Some(meta);
    }

    /// A number's current value, for explanations.
    pub fn num(&self, name: &str) -> Option<f64> {
        self.num_at(self.scope.slot(name)?)
    }

    /// A slot's value for evaluation; `None` when unset.
    fn value(&self, slot: usize) -> Option<Val<'a>> {
        match self.values.get(slot)? {
            Slot::Unset => None,
            Slot::Num(f) => Some(Val::Num(*f)),
            Slot::Text(s) => Some(Val::Text(Cow::Borrowed(s))),
        }
    }

    /// A metadata value: empty text when absent.
    fn meta_value(&self, key: &str) -> &'a str {
        self.meta
            .and_then(|m| m.0.get(key))
            .map_or("", String::as_str)
    }

    /// Every variable's value as text, for message templates.
    pub fn render(&self, name: &str) -> Option<String> {
        if let Some(key) = name.strip_prefix("metadata.") {
            return Some(self.meta_value(key).to_string());
        }
        Some(match self.values.get(self.scope.slot(name)?)? {
            Slot::Num(f) => format_number(*f),
            Slot::Text(s) => s.to_string(),
            Slot::Unset => String::new(),
        })
    }
}

/// Numbers as people write them: integers without a decimal point, others with up to 2 decimals.
pub fn format_number(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{f:.0}")
    } else {
        let s = format!("{f:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Why an evaluation failed at run time: a variable without data, or a value that is not a
/// finite number. Either way the caller has no value and must treat it as missing data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("evaluating {text:?}: {reason}")]
pub struct EvalError {
    pub text: String,
    pub reason: String,
    /// The offending value when a number was not finite (NaN or infinite).
    pub non_finite: Option<f64>,
}

fn depth_of(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for c in text.chars() {
        match c {
            '(' => {
                depth += 1;
                max = max.max(depth);
            }
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn check_writes(node: &Node, text: &str) -> Result<(), ExprError> {
    match node.operator() {
        Operator::Assign
        | Operator::AddAssign
        | Operator::SubAssign
        | Operator::MulAssign
        | Operator::DivAssign
        | Operator::ModAssign
        | Operator::ExpAssign
        | Operator::AndAssign
        | Operator::OrAssign
        | Operator::Chain
        | Operator::VariableIdentifierWrite { .. } => {
            return Err(ExprError::Assignment {
                text: text.to_string(),
            });
        }
        _ => {}
    }
    node.children()
        .iter()
        .try_for_each(|c| check_writes(c, text))
}

fn check_names(node: &Node, scope: &'static Scope, text: &str) -> Result<(), ExprError> {
    for name in node.iter_variable_identifiers() {
        let known = scope.slot(name).is_some()
            || (scope.metadata
                && name
                    .strip_prefix("metadata.")
                    .is_some_and(|k| !k.is_empty()));
        if !known {
            return Err(ExprError::UnknownVariable {
                name: name.to_string(),
                text: text.to_string(),
                scope: scope.name,
                valid: scope.valid_names(),
            });
        }
    }
    for name in node.iter_function_identifiers() {
        if !FUNCTIONS.contains(&name) {
            return Err(ExprError::UnknownFunction {
                name: name.to_string(),
                text: text.to_string(),
            });
        }
    }
    Ok(())
}

/// Compiles `text` for `scope` and checks that it evaluates to `kind`.
pub fn compile(text: &str, scope: &'static Scope, kind: Kind) -> Result<Expr, ExprError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ExprError::Empty);
    }
    if trimmed.len() > MAX_LEN {
        return Err(ExprError::TooLong { len: trimmed.len() });
    }
    let depth = depth_of(trimmed);
    if depth > MAX_DEPTH {
        return Err(ExprError::TooDeep { depth });
    }
    let node = evalexpr::build_operator_tree(trimmed).map_err(|e| ExprError::Syntax {
        text: trimmed.to_string(),
        reason: e.to_string(),
    })?;
    check_writes(&node, trimmed)?;
    check_names(&node, scope, trimmed)?;
    let (ast, ty) = ast::lower(&node, scope).map_err(|reason| ExprError::Type {
        text: trimmed.to_string(),
        reason,
    })?;
    let ok = match kind {
        Kind::Bool => ty == Ty::Bool,
        Kind::Number => ty == Ty::Num,
    };
    if !ok {
        return Err(ExprError::WrongKind {
            text: trimmed.to_string(),
            found: match ty {
                Ty::Bool => "a boolean",
                Ty::Num => "a number",
                Ty::Text => "a text",
                Ty::Tuple(_) => "a tuple",
            },
            wanted: match kind {
                Kind::Bool => "boolean condition",
                Kind::Number => "number",
            },
        });
    }
    let mut variables: Vec<String> = Vec::new();
    for v in node.iter_variable_identifiers() {
        if !variables.iter().any(|x| x == v) {
            variables.push(v.to_string());
        }
    }
    Ok(Expr {
        ast,
        variables,
        text: trimmed.to_string(),
        kind,
    })
}

impl Expr {
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The variable names this expression reads, for explanations.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(String::as_str)
    }

    /// Evaluates a condition.
    pub fn eval_bool(&self, b: &Bindings<'_>) -> Result<bool, EvalError> {
        match self.ast.eval(b) {
            Ok(Val::Bool(v)) => Ok(v),
            Ok(other) => {
                Err(self.eval_error(Fail::Type(format!("expected a boolean, got {other:?}"))))
            }
            Err(e) => Err(self.eval_error(e)),
        }
    }

    /// Evaluates a number; never returns NaN or an infinity.
    pub fn eval_f64(&self, b: &Bindings<'_>) -> Result<f64, EvalError> {
        match self.ast.eval(b) {
            Ok(Val::Num(v)) if v.is_finite() => Ok(v),
            Ok(Val::Num(v)) => Err(self.eval_error(Fail::NonFinite {
                what: self.text.clone(),
                value: v,
            })),
            Ok(other) => {
                Err(self.eval_error(Fail::Type(format!("expected a number, got {other:?}"))))
            }
            Err(e) => Err(self.eval_error(e)),
        }
    }

    fn eval_error(&self, fail: Fail) -> EvalError {
        EvalError {
            text: self.text.clone(),
            non_finite: match &fail {
                Fail::NonFinite { value, .. } => Some(*value),
                _ => None,
            },
            reason: fail.to_string(),
        }
    }
}

#[cfg(test)]
mod tests;
