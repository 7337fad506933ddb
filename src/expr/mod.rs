//! Rule expressions: the only module that imports `evalexpr` (pinned at 11.3.1, its last MIT
//! release).
//!
//! evalexpr has traps, closed here at compile time, when a rule file is loaded:
//! - malformed text such as `cpu > && 3` parses and fails only when evaluated: every expression
//!   is evaluated once against typed sample values of its scope and must yield its kind
//!   (boolean for conditions, number for metrics);
//! - `&&` does not short-circuit: both sides are type-checked, so neither can fail later;
//! - int/int division truncates: every metric is fed as a float, and a division or remainder
//!   whose operands are both integer constants is rejected;
//! - errors carry no position: messages name the expression and the offending name instead;
//! - deep nesting overflows the stack: length and nesting depth are capped before parsing.
//!
//! Unknown variables and functions are rejected by name, listing the valid ones. Assignments and
//! `;` chains are rejected: rules read, they never write.

use std::collections::BTreeMap;
use std::fmt;

use evalexpr::{Context, EvalexprError, EvalexprResult, Node, Operator, Value};

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
    #[error("{text:?} divides integer constants, which truncates (1/2 is 0); write 1.0/2 instead")]
    IntegerDivision { text: String },
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
    node: Node,
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
pub struct Text(Value);

impl Text {
    pub fn new(s: &str) -> Text {
        Text(Value::String(s.to_string()))
    }
}

/// Metadata values, converted once per sandbox or event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta(BTreeMap<String, Value>);

impl Meta {
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> Meta {
        Meta(
            pairs
                .into_iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    }
}

static EMPTY_TEXT: Value = Value::String(String::new());

/// The values of one scope's variables for one evaluation. Filling it does not allocate.
pub struct Bindings<'a> {
    scope: &'static Scope,
    values: Vec<Slot<'a>>,
    meta: Option<&'a Meta>,
}

enum Slot<'a> {
    Unset,
    Num(Value),
    Text(&'a Value),
}

impl<'a> Bindings<'a> {
    pub fn new(scope: &'static Scope) -> Self {
        Bindings {
            scope,
            values: (0..scope.vars.len()).map(|_| Slot::Unset).collect(),
            meta: None,
        }
    }

    pub fn scope(&self) -> &'static Scope {
        self.scope
    }

    /// Sets a number by slot (see [`Scope::slot`]).
    pub fn set_num(&mut self, slot: usize, v: f64) {
        if let Some(s) = self.values.get_mut(slot) {
            *s = Slot::Num(Value::Float(v));
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
            Slot::Num(Value::Float(f)) => Some(*f),
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

    /// Every variable's value as text, for message templates.
    pub fn render(&self, name: &str) -> Option<String> {
        if let Some(key) = name.strip_prefix("metadata.") {
            return Some(match self.meta.and_then(|m| m.0.get(key)) {
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            });
        }
        Some(match self.values.get(self.scope.slot(name)?)? {
            Slot::Num(Value::Float(f)) => format_number(*f),
            Slot::Text(Value::String(s)) => s.clone(),
            _ => String::new(),
        })
    }

    /// Sample values used to type-check: 1.0 for numbers, "" for text.
    fn samples(scope: &'static Scope) -> Bindings<'static> {
        let values = scope
            .vars
            .iter()
            .map(|(_, t)| match t {
                VarType::Number => Slot::Num(Value::Float(1.0)),
                VarType::Text => Slot::Text(&EMPTY_TEXT),
            })
            .collect();
        Bindings {
            scope,
            values,
            meta: None,
        }
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

impl Context for Bindings<'_> {
    fn get_value(&self, identifier: &str) -> Option<&Value> {
        if let Some(slot) = self.scope.slot(identifier) {
            return match &self.values[slot] {
                Slot::Num(v) => Some(v),
                Slot::Text(v) => Some(v),
                Slot::Unset => None,
            };
        }
        if self.scope.metadata
            && let Some(key) = identifier.strip_prefix("metadata.")
        {
            return Some(self.meta.and_then(|m| m.0.get(key)).unwrap_or(&EMPTY_TEXT));
        }
        None
    }

    fn call_function(&self, identifier: &str, _argument: &Value) -> EvalexprResult<Value> {
        Err(EvalexprError::FunctionIdentifierNotFound(
            identifier.to_string(),
        ))
    }

    fn are_builtin_functions_disabled(&self) -> bool {
        false
    }

    fn set_builtin_functions_disabled(&mut self, _disabled: bool) -> EvalexprResult<()> {
        Err(EvalexprError::ContextNotMutable)
    }
}

/// Why an evaluation failed at run time (a value of an unexpected type reached it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("evaluating {text:?}: {reason}")]
pub struct EvalError {
    pub text: String,
    pub reason: String,
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

fn is_int_constant(node: &Node) -> bool {
    match node.operator() {
        Operator::Const { value } => matches!(value, Value::Int(_)),
        Operator::RootNode | Operator::Neg => {
            node.children().len() == 1 && is_int_constant(&node.children()[0])
        }
        Operator::Add | Operator::Sub | Operator::Mul | Operator::Div | Operator::Mod => {
            node.children().iter().all(is_int_constant)
        }
        _ => false,
    }
}

fn check_tree(node: &Node, text: &str) -> Result<(), ExprError> {
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
        Operator::Div | Operator::Mod if node.children().iter().all(is_int_constant) => {
            return Err(ExprError::IntegerDivision {
                text: text.to_string(),
            });
        }
        _ => {}
    }
    node.children().iter().try_for_each(|c| check_tree(c, text))
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
    check_tree(&node, trimmed)?;
    for name in node.iter_variable_identifiers() {
        let known = scope.slot(name).is_some()
            || (scope.metadata
                && name
                    .strip_prefix("metadata.")
                    .is_some_and(|k| !k.is_empty()));
        if !known {
            return Err(ExprError::UnknownVariable {
                name: name.to_string(),
                text: trimmed.to_string(),
                scope: scope.name,
                valid: scope.valid_names(),
            });
        }
    }
    for name in node.iter_function_identifiers() {
        if !FUNCTIONS.contains(&name) {
            return Err(ExprError::UnknownFunction {
                name: name.to_string(),
                text: trimmed.to_string(),
            });
        }
    }
    let expr = Expr {
        node,
        text: trimmed.to_string(),
        kind,
    };
    // Evaluate once against typed samples: catches malformed trees and type errors now.
    let value = expr
        .node
        .eval_with_context(&Bindings::samples(scope))
        .map_err(|e| ExprError::Type {
            text: trimmed.to_string(),
            reason: e.to_string(),
        })?;
    let found = match value {
        Value::Boolean(_) => "a boolean",
        Value::Float(_) | Value::Int(_) => "a number",
        Value::String(_) => "a text",
        Value::Tuple(_) => "a tuple",
        Value::Empty => "empty",
    };
    let ok = match kind {
        Kind::Bool => matches!(value, Value::Boolean(_)),
        Kind::Number => matches!(value, Value::Float(_) | Value::Int(_)),
    };
    if !ok {
        return Err(ExprError::WrongKind {
            text: trimmed.to_string(),
            found,
            wanted: match kind {
                Kind::Bool => "boolean condition",
                Kind::Number => "number",
            },
        });
    }
    Ok(expr)
}

impl Expr {
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The variable names this expression reads, for explanations.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.node.iter_variable_identifiers()
    }

    /// Evaluates a condition.
    pub fn eval_bool(&self, b: &Bindings<'_>) -> Result<bool, EvalError> {
        match self.node.eval_with_context(b) {
            Ok(Value::Boolean(v)) => Ok(v),
            Ok(other) => Err(self.eval_error(format!("expected a boolean, got {other}"))),
            Err(e) => Err(self.eval_error(e.to_string())),
        }
    }

    /// Evaluates a number.
    pub fn eval_f64(&self, b: &Bindings<'_>) -> Result<f64, EvalError> {
        match self.node.eval_with_context(b) {
            Ok(Value::Float(v)) => Ok(v),
            Ok(Value::Int(v)) => Ok(v as f64),
            Ok(other) => Err(self.eval_error(format!("expected a number, got {other}"))),
            Err(e) => Err(self.eval_error(e.to_string())),
        }
    }

    fn eval_error(&self, reason: String) -> EvalError {
        EvalError {
            text: self.text.clone(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests;
