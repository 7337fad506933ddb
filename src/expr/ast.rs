//! The typed expression tree poolpilot evaluates itself: evalexpr only parses.
//!
//! [`lower`] turns evalexpr's operator tree into an [`Ast`] with variables resolved to slots and
//! every node's type inferred ([`Ty`]), so a type error, such as `if(c, "x", 1)` or
//! `template == 3`, is a load error rather than a rule that silently never holds. [`Ast::eval`]
//! then evaluates with the semantics docs/rules.md promises:
//! - every number is a float, so `busy_count == 0` compares values, never int against float;
//! - a result that is not a finite number (`0.0 / 0`, `math::sqrt(-1)`, overflow) is an error,
//!   which the engine treats as missing data, never as a value;
//! - `&&` and `||` short-circuit (both sides are type-checked at load);
//! - `contains` works on text (substring) and on tuples.
//!
//! It must never panic on any tree evalexpr can build.

use std::borrow::Cow;
use std::fmt;

use evalexpr::{Node, Operator, Value};

use super::{Bindings, Scope, VarType};

/// The type of a value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ty {
    Num,
    Bool,
    Text,
    Tuple(Vec<Ty>),
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ty::Num => "a number",
            Ty::Bool => "a boolean",
            Ty::Text => "a text",
            Ty::Tuple(_) => "a tuple",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Exp,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cmp {
    Eq,
    Neq,
    Gt,
    Lt,
    Geq,
    Leq,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Func {
    Min,
    Max,
    Floor,
    Ceil,
    Round,
    Abs,
    Sqrt,
    If,
    Contains,
    Len,
    Lower,
    Upper,
    Trim,
}

impl Func {
    fn by_name(name: &str) -> Option<Func> {
        Some(match name {
            "min" => Func::Min,
            "max" => Func::Max,
            "floor" => Func::Floor,
            "ceil" => Func::Ceil,
            "round" => Func::Round,
            "math::abs" => Func::Abs,
            "math::sqrt" => Func::Sqrt,
            "if" => Func::If,
            "contains" => Func::Contains,
            "len" => Func::Len,
            "str::to_lowercase" => Func::Lower,
            "str::to_uppercase" => Func::Upper,
            "str::trim" => Func::Trim,
            _ => return None,
        })
    }
}

/// A checked expression tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ast {
    Num(f64),
    Bool(bool),
    Text(String),
    /// A scope variable, by slot; the name is kept for messages.
    Var(usize, &'static str),
    /// `metadata.<key>`: text, empty when absent.
    Meta(String),
    Neg(Box<Ast>),
    Not(Box<Ast>),
    Arith(Arith, Box<Ast>, Box<Ast>),
    Cmp(Cmp, Box<Ast>, Box<Ast>),
    And(Box<Ast>, Box<Ast>),
    Or(Box<Ast>, Box<Ast>),
    Tuple(Vec<Ast>),
    Call(Func, Vec<Ast>),
}

/// A run-time value. Text borrows from the bindings where it can.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    Num(f64),
    Bool(bool),
    Text(Cow<'a, str>),
    Tuple(Vec<Val<'a>>),
}

/// Turns evalexpr's tree into a typed [`Ast`]; the error is a sentence for the user.
pub(crate) fn lower(node: &Node, scope: &'static Scope) -> Result<(Ast, Ty), String> {
    let ast = to_ast(node, scope)?;
    let ty = type_of(&ast, scope)?;
    Ok((ast, ty))
}

fn child(node: &Node, i: usize) -> Result<&Node, String> {
    node.children()
        .get(i)
        .ok_or_else(|| format!("operator {} is missing an operand", node.operator()))
}

fn boxed(node: &Node, i: usize, scope: &'static Scope) -> Result<Box<Ast>, String> {
    Ok(Box::new(to_ast(child(node, i)?, scope)?))
}

fn to_ast(node: &Node, scope: &'static Scope) -> Result<Ast, String> {
    let bin = |node: &Node| -> Result<(Box<Ast>, Box<Ast>), String> {
        Ok((boxed(node, 0, scope)?, boxed(node, 1, scope)?))
    };
    Ok(match node.operator() {
        Operator::RootNode => match node.children() {
            [] => return Err("empty parentheses `()` have no value".into()),
            [only] => to_ast(only, scope)?,
            _ => return Err("parentheses hold more than one expression".into()),
        },
        Operator::Const { value } => constant(value)?,
        Operator::VariableIdentifierRead { identifier } => variable(identifier, scope)?,
        Operator::Neg => Ast::Neg(boxed(node, 0, scope)?),
        Operator::Not => Ast::Not(boxed(node, 0, scope)?),
        Operator::Add => arith(Arith::Add, bin(node)?),
        Operator::Sub => arith(Arith::Sub, bin(node)?),
        Operator::Mul => arith(Arith::Mul, bin(node)?),
        Operator::Div => arith(Arith::Div, bin(node)?),
        Operator::Mod => arith(Arith::Mod, bin(node)?),
        Operator::Exp => arith(Arith::Exp, bin(node)?),
        Operator::Eq => cmp(Cmp::Eq, bin(node)?),
        Operator::Neq => cmp(Cmp::Neq, bin(node)?),
        Operator::Gt => cmp(Cmp::Gt, bin(node)?),
        Operator::Lt => cmp(Cmp::Lt, bin(node)?),
        Operator::Geq => cmp(Cmp::Geq, bin(node)?),
        Operator::Leq => cmp(Cmp::Leq, bin(node)?),
        Operator::And => {
            let (a, b) = bin(node)?;
            Ast::And(a, b)
        }
        Operator::Or => {
            let (a, b) = bin(node)?;
            Ast::Or(a, b)
        }
        Operator::Tuple => Ast::Tuple(
            node.children()
                .iter()
                .map(|c| to_ast(c, scope))
                .collect::<Result<_, _>>()?,
        ),
        Operator::FunctionIdentifier { identifier } => call(node, identifier, scope)?,
        other => return Err(format!("operator {other} is not allowed in rules")),
    })
}

fn arith(op: Arith, (a, b): (Box<Ast>, Box<Ast>)) -> Ast {
    Ast::Arith(op, a, b)
}

fn cmp(op: Cmp, (a, b): (Box<Ast>, Box<Ast>)) -> Ast {
    Ast::Cmp(op, a, b)
}

fn constant(value: &Value) -> Result<Ast, String> {
    Ok(match value {
        Value::Int(i) => Ast::Num(*i as f64),
        Value::Float(f) if f.is_finite() => Ast::Num(*f),
        Value::Float(f) => return Err(format!("the constant {f} is not a finite number")),
        Value::String(s) => Ast::Text(s.clone()),
        Value::Boolean(b) => Ast::Bool(*b),
        Value::Tuple(items) => Ast::Tuple(items.iter().map(constant).collect::<Result<_, _>>()?),
        Value::Empty => return Err("an empty value `()` is not allowed".into()),
    })
}

fn variable(name: &str, scope: &'static Scope) -> Result<Ast, String> {
    if let Some(slot) = scope.slot(name) {
        let name = scope.vars.get(slot).map_or("", |(n, _)| *n);
        return Ok(Ast::Var(slot, name));
    }
    match name.strip_prefix("metadata.") {
        Some(key) if scope.metadata && !key.is_empty() => Ok(Ast::Meta(key.to_string())),
        _ => Err(format!("unknown variable {name:?}")),
    }
}

/// A call's arguments: evalexpr hangs them under one parenthesis node, as a tuple when there
/// are several.
fn call(node: &Node, name: &str, scope: &'static Scope) -> Result<Ast, String> {
    let func = Func::by_name(name).ok_or_else(|| format!("unknown function {name:?}"))?;
    let parens = child(node, 0)?;
    let inner = match parens.operator() {
        Operator::RootNode => parens.children(),
        _ => std::slice::from_ref(parens),
    };
    let args = match inner {
        [] => Vec::new(),
        [t] if matches!(t.operator(), Operator::Tuple) => t
            .children()
            .iter()
            .map(|c| to_ast(c, scope))
            .collect::<Result<_, _>>()?,
        [one] => vec![to_ast(one, scope)?],
        _ => return Err(format!("cannot read the arguments of {name}")),
    };
    Ok(Ast::Call(func, args))
}

fn want(ast: &Ast, ty: &Ty, wanted: &Ty, what: &str) -> Result<(), String> {
    if ty == wanted {
        Ok(())
    } else {
        Err(format!("{what} needs {wanted}, but `{ast}` is {ty}"))
    }
}

/// Infers a node's type, or says what does not fit.
pub(crate) fn type_of(ast: &Ast, scope: &'static Scope) -> Result<Ty, String> {
    Ok(match ast {
        Ast::Num(_) => Ty::Num,
        Ast::Bool(_) => Ty::Bool,
        Ast::Text(_) | Ast::Meta(_) => Ty::Text,
        Ast::Var(slot, _) => match scope.vars.get(*slot).map(|(_, t)| t) {
            Some(VarType::Number) => Ty::Num,
            _ => Ty::Text,
        },
        Ast::Neg(a) => {
            want(a, &type_of(a, scope)?, &Ty::Num, "`-`")?;
            Ty::Num
        }
        Ast::Not(a) => {
            want(a, &type_of(a, scope)?, &Ty::Bool, "`!`")?;
            Ty::Bool
        }
        Ast::Arith(op, a, b) => {
            let (ta, tb) = (type_of(a, scope)?, type_of(b, scope)?);
            if *op == Arith::Add && ta == Ty::Text && tb == Ty::Text {
                Ty::Text
            } else {
                let what = format!("`{}`", arith_sign(*op));
                want(a, &ta, &Ty::Num, &what)?;
                want(b, &tb, &Ty::Num, &what)?;
                Ty::Num
            }
        }
        Ast::Cmp(op, a, b) => {
            let (ta, tb) = (type_of(a, scope)?, type_of(b, scope)?);
            if ta != tb {
                return Err(format!(
                    "`{ast}` compares {ta} with {tb}; both sides must have the same type"
                ));
            }
            let ordered = matches!(ta, Ty::Num | Ty::Text);
            if !matches!(op, Cmp::Eq | Cmp::Neq) && !ordered {
                return Err(format!(
                    "`{ast}` orders {ta}; only numbers and texts can be ordered"
                ));
            }
            Ty::Bool
        }
        Ast::And(a, b) | Ast::Or(a, b) => {
            let what = if matches!(ast, Ast::And(..)) {
                "`&&`"
            } else {
                "`||`"
            };
            want(a, &type_of(a, scope)?, &Ty::Bool, what)?;
            want(b, &type_of(b, scope)?, &Ty::Bool, what)?;
            Ty::Bool
        }
        Ast::Tuple(items) => Ty::Tuple(
            items
                .iter()
                .map(|i| type_of(i, scope))
                .collect::<Result<_, _>>()?,
        ),
        Ast::Call(f, args) => call_type(*f, args, scope)?,
    })
}

fn call_type(f: Func, args: &[Ast], scope: &'static Scope) -> Result<Ty, String> {
    let tys: Vec<Ty> = args
        .iter()
        .map(|a| type_of(a, scope))
        .collect::<Result<_, _>>()?;
    let name = func_name(f);
    let arity = |n: usize| {
        if tys.len() == n {
            Ok(())
        } else {
            Err(format!(
                "{name} takes {n} argument{}, got {}",
                if n == 1 { "" } else { "s" },
                tys.len()
            ))
        }
    };
    let nums = |what: &str| -> Result<(), String> {
        args.iter()
            .zip(&tys)
            .try_for_each(|(a, t)| want(a, t, &Ty::Num, what))
    };
    Ok(match f {
        Func::Min | Func::Max => {
            if tys.is_empty() {
                return Err(format!("{name} needs at least one number"));
            }
            nums(name)?;
            Ty::Num
        }
        Func::Floor | Func::Ceil | Func::Round | Func::Abs | Func::Sqrt => {
            arity(1)?;
            nums(name)?;
            Ty::Num
        }
        Func::If => {
            arity(3)?;
            want(&args[0], &tys[0], &Ty::Bool, "if's condition")?;
            if tys[1] != tys[2] {
                return Err(format!(
                    "if's branches must have the same type, but `{}` is {} and `{}` is {}",
                    args[1], tys[1], args[2], tys[2]
                ));
            }
            tys[1].clone()
        }
        Func::Contains => {
            arity(2)?;
            match (&tys[0], &tys[1]) {
                (Ty::Text, Ty::Text) => {}
                (Ty::Tuple(items), t) if items.iter().all(|i| i == t) => {}
                _ => {
                    return Err(format!(
                        "contains takes (text, text) for a substring or (tuple, value of its items' type), got {} and {}",
                        tys[0], tys[1]
                    ));
                }
            }
            Ty::Bool
        }
        Func::Len => {
            arity(1)?;
            if !matches!(tys[0], Ty::Text | Ty::Tuple(_)) {
                return Err(format!("len needs a text or a tuple, got {}", tys[0]));
            }
            Ty::Num
        }
        Func::Lower | Func::Upper | Func::Trim => {
            arity(1)?;
            want(&args[0], &tys[0], &Ty::Text, name)?;
            Ty::Text
        }
    })
}

/// Why an evaluation produced no value: missing data, for the engine.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fail {
    /// A variable has no value (no fresh sample).
    Unset(&'static str),
    /// A number that is not finite.
    NonFinite { what: String, value: f64 },
    /// A type that passed the check did not arrive (a bug, reported rather than panicking).
    Type(String),
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Unset(name) => write!(f, "{name} has no value"),
            Fail::NonFinite { what, value } => {
                write!(f, "`{what}` is {value}, not a finite number")
            }
            Fail::Type(why) => f.write_str(why),
        }
    }
}

fn finite(v: f64, what: &Ast) -> Result<Val<'static>, Fail> {
    if v.is_finite() {
        Ok(Val::Num(v))
    } else {
        Err(Fail::NonFinite {
            what: what.to_string(),
            value: v,
        })
    }
}

impl Ast {
    pub(crate) fn eval<'a>(&self, b: &'a Bindings<'a>) -> Result<Val<'a>, Fail> {
        Ok(match self {
            Ast::Num(n) => Val::Num(*n),
            Ast::Bool(v) => Val::Bool(*v),
            Ast::Text(s) => Val::Text(Cow::Owned(s.clone())),
            Ast::Var(slot, name) => match b.value(*slot) {
                Some(Val::Num(n)) => finite(n, self)?,
                Some(v) => v,
                None => return Err(Fail::Unset(name)),
            },
            Ast::Meta(key) => Val::Text(Cow::Borrowed(b.meta_value(key))),
            Ast::Neg(a) => finite(-num(a.eval(b)?)?, self)?,
            Ast::Not(a) => Val::Bool(!boolean(a.eval(b)?)?),
            Ast::Arith(op, x, y) => self.arith(*op, x.eval(b)?, y.eval(b)?)?,
            Ast::Cmp(op, x, y) => Val::Bool(compare(*op, &x.eval(b)?, &y.eval(b)?)),
            Ast::And(x, y) => Val::Bool(boolean(x.eval(b)?)? && boolean(y.eval(b)?)?),
            Ast::Or(x, y) => Val::Bool(boolean(x.eval(b)?)? || boolean(y.eval(b)?)?),
            Ast::Tuple(items) => {
                Val::Tuple(items.iter().map(|i| i.eval(b)).collect::<Result<_, _>>()?)
            }
            Ast::Call(f, args) => self.call(*f, args, b)?,
        })
    }

    fn arith<'a>(&self, op: Arith, x: Val<'a>, y: Val<'a>) -> Result<Val<'a>, Fail> {
        if let (Arith::Add, Val::Text(a), Val::Text(b)) = (op, &x, &y) {
            return Ok(Val::Text(Cow::Owned(format!("{a}{b}"))));
        }
        let (x, y) = (num(x)?, num(y)?);
        finite(
            match op {
                Arith::Add => x + y,
                Arith::Sub => x - y,
                Arith::Mul => x * y,
                Arith::Div => x / y,
                Arith::Mod => x % y,
                Arith::Exp => x.powf(y),
            },
            self,
        )
    }

    fn call<'a>(&self, f: Func, args: &[Ast], b: &'a Bindings<'a>) -> Result<Val<'a>, Fail> {
        if let (Func::If, [c, yes, no]) = (f, args) {
            // Only the branch taken is evaluated: the other may lack data.
            return if boolean(c.eval(b)?)? {
                yes.eval(b)
            } else {
                no.eval(b)
            };
        }
        let mut vals = args
            .iter()
            .map(|a| a.eval(b))
            .collect::<Result<Vec<_>, _>>()?;
        let one = |vals: &mut Vec<Val<'a>>| {
            vals.pop()
                .ok_or_else(|| Fail::Type(format!("{} needs an argument", func_name(f))))
        };
        Ok(match f {
            Func::Min | Func::Max => {
                let mut acc: Option<f64> = None;
                for v in vals {
                    let n = num(v)?;
                    acc = Some(match (acc, f) {
                        (None, _) => n,
                        (Some(a), Func::Min) => a.min(n),
                        (Some(a), _) => a.max(n),
                    });
                }
                Val::Num(acc.ok_or_else(|| Fail::Type("min/max of nothing".into()))?)
            }
            Func::Floor => finite(num(one(&mut vals)?)?.floor(), self)?,
            Func::Ceil => finite(num(one(&mut vals)?)?.ceil(), self)?,
            Func::Round => finite(num(one(&mut vals)?)?.round(), self)?,
            Func::Abs => finite(num(one(&mut vals)?)?.abs(), self)?,
            Func::Sqrt => finite(num(one(&mut vals)?)?.sqrt(), self)?,
            Func::Contains => {
                let needle = one(&mut vals)?;
                match (one(&mut vals)?, needle) {
                    (Val::Text(hay), Val::Text(n)) => Val::Bool(hay.contains(n.as_ref())),
                    (Val::Tuple(items), n) => {
                        Val::Bool(items.iter().any(|i| compare(Cmp::Eq, i, &n)))
                    }
                    _ => return Err(Fail::Type("contains: unexpected arguments".into())),
                }
            }
            Func::Len => match one(&mut vals)? {
                Val::Text(s) => Val::Num(s.chars().count() as f64),
                Val::Tuple(items) => Val::Num(items.len() as f64),
                _ => return Err(Fail::Type("len: unexpected argument".into())),
            },
            Func::Lower => Val::Text(Cow::Owned(text(one(&mut vals)?)?.to_lowercase())),
            Func::Upper => Val::Text(Cow::Owned(text(one(&mut vals)?)?.to_uppercase())),
            Func::Trim => Val::Text(Cow::Owned(text(one(&mut vals)?)?.trim().to_string())),
            Func::If => return Err(Fail::Type("if takes 3 arguments".into())),
        })
    }
}

fn num(v: Val<'_>) -> Result<f64, Fail> {
    match v {
        Val::Num(n) => Ok(n),
        other => Err(Fail::Type(format!("expected a number, got {other:?}"))),
    }
}

fn boolean(v: Val<'_>) -> Result<bool, Fail> {
    match v {
        Val::Bool(b) => Ok(b),
        other => Err(Fail::Type(format!("expected a boolean, got {other:?}"))),
    }
}

fn text(v: Val<'_>) -> Result<Cow<'_, str>, Fail> {
    match v {
        Val::Text(s) => Ok(s),
        other => Err(Fail::Type(format!("expected a text, got {other:?}"))),
    }
}

/// Numbers by value (`0 == 0.0`), texts and booleans as such, tuples item by item.
fn compare(op: Cmp, x: &Val<'_>, y: &Val<'_>) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (x, y) {
        (Val::Num(a), Val::Num(b)) => a.partial_cmp(b),
        (Val::Text(a), Val::Text(b)) => Some(a.cmp(b)),
        (Val::Bool(a), Val::Bool(b)) => Some(a.cmp(b)).filter(|_| matches!(op, Cmp::Eq | Cmp::Neq)),
        (Val::Tuple(a), Val::Tuple(b)) => {
            let same = a.len() == b.len() && a.iter().zip(b).all(|(p, q)| compare(Cmp::Eq, p, q));
            return match op {
                Cmp::Eq => same,
                Cmp::Neq => !same,
                _ => false,
            };
        }
        _ => None,
    };
    match (op, ord) {
        (Cmp::Eq, o) => o == Some(Ordering::Equal),
        (Cmp::Neq, o) => o != Some(Ordering::Equal),
        (Cmp::Gt, o) => o == Some(Ordering::Greater),
        (Cmp::Lt, o) => o == Some(Ordering::Less),
        (Cmp::Geq, o) => matches!(o, Some(Ordering::Greater | Ordering::Equal)),
        (Cmp::Leq, o) => matches!(o, Some(Ordering::Less | Ordering::Equal)),
    }
}

fn arith_sign(op: Arith) -> &'static str {
    match op {
        Arith::Add => "+",
        Arith::Sub => "-",
        Arith::Mul => "*",
        Arith::Div => "/",
        Arith::Mod => "%",
        Arith::Exp => "^",
    }
}

fn cmp_sign(op: Cmp) -> &'static str {
    match op {
        Cmp::Eq => "==",
        Cmp::Neq => "!=",
        Cmp::Gt => ">",
        Cmp::Lt => "<",
        Cmp::Geq => ">=",
        Cmp::Leq => "<=",
    }
}

fn func_name(f: Func) -> &'static str {
    match f {
        Func::Min => "min",
        Func::Max => "max",
        Func::Floor => "floor",
        Func::Ceil => "ceil",
        Func::Round => "round",
        Func::Abs => "math::abs",
        Func::Sqrt => "math::sqrt",
        Func::If => "if",
        Func::Contains => "contains",
        Func::Len => "len",
        Func::Lower => "str::to_lowercase",
        Func::Upper => "str::to_uppercase",
        Func::Trim => "str::trim",
    }
}

impl fmt::Display for Ast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ast::Num(n) => write!(f, "{}", super::format_number(*n)),
            Ast::Bool(b) => write!(f, "{b}"),
            Ast::Text(s) => write!(f, "{s:?}"),
            Ast::Var(_, name) => f.write_str(name),
            Ast::Meta(key) => write!(f, "metadata.{key}"),
            Ast::Neg(a) => write!(f, "-{a}"),
            Ast::Not(a) => write!(f, "!{a}"),
            Ast::Arith(op, a, b) => write!(f, "{} {} {}", Operand(a), arith_sign(*op), Operand(b)),
            Ast::Cmp(op, a, b) => write!(f, "{} {} {}", Operand(a), cmp_sign(*op), Operand(b)),
            Ast::And(a, b) => write!(f, "{} && {}", Operand(a), Operand(b)),
            Ast::Or(a, b) => write!(f, "{} || {}", Operand(a), Operand(b)),
            Ast::Tuple(items) => write_list(f, "", items),
            Ast::Call(func, args) => write_list(f, func_name(*func), args),
        }
    }
}

/// An operand, parenthesized when it is itself an operation, so the text reads unambiguously.
struct Operand<'a>(&'a Ast);

impl fmt::Display for Operand<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            a @ (Ast::Arith(..) | Ast::Cmp(..) | Ast::And(..) | Ast::Or(..)) => write!(f, "({a})"),
            a => write!(f, "{a}"),
        }
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, name: &str, items: &[Ast]) -> fmt::Result {
    write!(f, "{name}(")?;
    for (i, a) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{a}")?;
    }
    f.write_str(")")
}
