//! The manifest's small expression language: parsing once at load, evaluation at inference
//! (symbolic dims allowed) and at launch (concrete dims and device pointers).
//!
//! Grammar: `||` < `&&` < comparisons < `+ -` < `* / %` < unary `- !` < primary; primaries are
//! integers, floats, "strings", `true`/`false`, names (lets, constexprs, tensors), tensor
//! fields `x.shape[i]`, `x.rank`, `x.numel`, `x.itemsize`, `x.ptr`, `x.dtype`, calls
//! `attr("name"[, default])`, `cdiv`, `min`, `max`, `if(c, a, b)` (lazy), `one_of(v, a, ...)`,
//! `same_shape(x, y)`, and parentheses. A symbolic dim makes arithmetic on it `Unknown`; a
//! check that is `Unknown` passes (it is checked again with concrete dims at launch).

use rtllm_plugin_api::{AttrValue, Attrs, Dim, TensorMeta};
use std::fmt;

/// A parse or evaluation error (the caller adds which expression).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError(msg.into()))
}

/// A field of a tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Shape(usize),
    Rank,
    Numel,
    Itemsize,
    Ptr,
    Dtype,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    Name(String),
    Field(String, Field),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    Call(String, Vec<Expr>),
}

/// A value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// A symbolic dim (by name).
    Sym(String),
    /// Depends on a symbolic dim.
    Unknown,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Str(v) => write!(f, "{v:?}"),
            Value::Sym(s) => write!(f, "{s}"),
            Value::Unknown => f.write_str("(unknown)"),
        }
    }
}

/// What names resolve to during one evaluation.
pub struct Scope<'a> {
    /// Tensors by name: meta and, at launch, the device address.
    pub tensors: Vec<(&'a str, &'a TensorMeta, Option<u64>)>,
    pub attrs: &'a Attrs,
    /// Lets and constexprs, in definition order.
    pub vars: Vec<(String, Value)>,
}

impl<'a> Scope<'a> {
    fn tensor(&self, name: &str) -> Option<(&'a TensorMeta, Option<u64>)> {
        self.tensors.iter().find(|t| t.0 == name).map(|t| (t.1, t.2))
    }

    fn var(&self, name: &str) -> Option<&Value> {
        self.vars.iter().rev().find(|v| v.0 == name).map(|v| &v.1)
    }

    /// Evaluates `e`.
    pub fn eval(&self, e: &Expr) -> Result<Value, ExprError> {
        Ok(match e {
            Expr::Int(v) => Value::Int(*v),
            Expr::Float(v) => Value::Float(*v),
            Expr::Str(s) => Value::Str(s.clone()),
            Expr::Bool(b) => Value::Bool(*b),
            Expr::Name(n) => match self.var(n) {
                Some(v) => v.clone(),
                None if self.tensor(n).is_some() => {
                    return err(format!("'{n}' is a tensor; use a field such as {n}.shape[0]"))
                }
                None => return err(format!("unknown name '{n}'")),
            },
            Expr::Field(t, f) => self.field(t, f)?,
            Expr::Neg(a) => match self.eval(a)? {
                Value::Int(v) => Value::Int(v.checked_neg().ok_or_else(|| ExprError("overflow".into()))?),
                Value::Float(v) => Value::Float(-v),
                Value::Sym(_) | Value::Unknown => Value::Unknown,
                v => return err(format!("cannot negate {v}")),
            },
            Expr::Not(a) => match self.eval(a)? {
                Value::Bool(b) => Value::Bool(!b),
                Value::Unknown => Value::Unknown,
                v => return err(format!("'!' needs a bool, got {v}")),
            },
            Expr::Bin(op, a, b) => self.binary(*op, a, b)?,
            Expr::Call(name, args) => self.call(name, args)?,
        })
    }

    fn field(&self, t: &str, f: &Field) -> Result<Value, ExprError> {
        let Some((meta, ptr)) = self.tensor(t) else { return err(format!("unknown tensor '{t}'")) };
        Ok(match f {
            Field::Shape(i) => match meta.dims.get(*i) {
                Some(Dim::Known(v)) => Value::Int(*v as i64),
                Some(Dim::Sym(s)) => Value::Sym(s.to_string()),
                None => return err(format!("{t}.shape[{i}] is out of range for {t} {meta}")),
            },
            Field::Rank => Value::Int(meta.rank() as i64),
            Field::Numel => meta.numel().map_or(Value::Unknown, |n| Value::Int(n as i64)),
            Field::Itemsize => Value::Int(meta.dtype.block_bytes() as i64),
            Field::Dtype => Value::Str(meta.dtype.name().to_string()),
            Field::Ptr => match ptr {
                Some(p) => Value::Int(p as i64),
                None => Value::Unknown,
            },
        })
    }

    fn binary(&self, op: BinOp, a: &Expr, b: &Expr) -> Result<Value, ExprError> {
        let x = self.eval(a)?;
        // Short-circuit so `if`-like guards (`kind != 2 || attr("x") > 0`) skip missing attrs.
        match (op, &x) {
            (BinOp::Or, Value::Bool(true)) => return Ok(Value::Bool(true)),
            (BinOp::And, Value::Bool(false)) => return Ok(Value::Bool(false)),
            _ => {}
        }
        let y = self.eval(b)?;
        binary(op, x, y)
    }

    fn call(&self, name: &str, args: &[Expr]) -> Result<Value, ExprError> {
        let arity = |n: usize| {
            if args.len() == n {
                Ok(())
            } else {
                err(format!("{name}() takes {n} arguments, got {}", args.len()))
            }
        };
        match name {
            "if" => {
                arity(3)?;
                match self.eval(&args[0])? {
                    Value::Bool(true) => self.eval(&args[1]),
                    Value::Bool(false) => self.eval(&args[2]),
                    Value::Unknown => Ok(Value::Unknown),
                    v => err(format!("if() needs a bool condition, got {v}")),
                }
            }
            "attr" => {
                if args.is_empty() || args.len() > 2 {
                    return err("attr() takes a name and an optional default");
                }
                let Expr::Str(key) = &args[0] else { return err("attr() takes a string name") };
                match self.attrs.get(key) {
                    Some(AttrValue::Int(v)) => Ok(Value::Int(*v)),
                    Some(AttrValue::Float(v)) => Ok(Value::Float(*v)),
                    Some(AttrValue::Bool(v)) => Ok(Value::Bool(*v)),
                    Some(AttrValue::Str(v)) => Ok(Value::Str(v.to_string())),
                    Some(AttrValue::Ints(_)) => err(format!("attribute '{key}' is an int list")),
                    None if args.len() == 2 => self.eval(&args[1]),
                    None => err(format!("missing attribute '{key}'")),
                }
            }
            "same_shape" => {
                arity(2)?;
                let meta = |e: &Expr| match e {
                    Expr::Name(n) => {
                        self.tensor(n).map(|t| t.0).ok_or_else(|| ExprError(format!("unknown tensor '{n}'")))
                    }
                    _ => err("same_shape() takes two tensor names"),
                };
                Ok(Value::Bool(meta(&args[0])?.dims == meta(&args[1])?.dims))
            }
            "one_of" => {
                if args.len() < 2 {
                    return err("one_of() takes a value and at least one choice");
                }
                let v = self.eval(&args[0])?;
                for c in &args[1..] {
                    if binary(BinOp::Eq, v.clone(), self.eval(c)?)? == Value::Bool(true) {
                        return Ok(Value::Bool(true));
                    }
                }
                Ok(if v == Value::Unknown { Value::Unknown } else { Value::Bool(false) })
            }
            "cdiv" | "min" | "max" => {
                arity(2)?;
                match (self.eval(&args[0])?, self.eval(&args[1])?) {
                    (Value::Int(a), Value::Int(b)) => match name {
                        "cdiv" if b <= 0 => err(format!("cdiv({a}, {b}): the divisor must be positive")),
                        "cdiv" => Ok(Value::Int(a.div_euclid(b) + i64::from(a.rem_euclid(b) != 0))),
                        "min" => Ok(Value::Int(a.min(b))),
                        _ => Ok(Value::Int(a.max(b))),
                    },
                    (Value::Sym(_) | Value::Unknown, _) | (_, Value::Sym(_) | Value::Unknown) => Ok(Value::Unknown),
                    (a, b) => match (num(&a), num(&b), name) {
                        (Some(a), Some(b), "min") => Ok(Value::Float(a.min(b))),
                        (Some(a), Some(b), "max") => Ok(Value::Float(a.max(b))),
                        _ => err(format!("{name}() needs integers, got {a} and {b}")),
                    },
                }
            }
            _ => err(format!("unknown function {name}()")),
        }
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn binary(op: BinOp, x: Value, y: Value) -> Result<Value, ExprError> {
    use BinOp::*;
    match op {
        Or | And => {
            return match (x, y) {
                (Value::Bool(a), Value::Bool(b)) => Ok(Value::Bool(if op == Or { a || b } else { a && b })),
                (Value::Bool(true), Value::Unknown) if op == Or => Ok(Value::Bool(true)),
                (Value::Unknown, Value::Bool(true)) if op == Or => Ok(Value::Bool(true)),
                (Value::Unknown, Value::Bool(false)) if op == And => Ok(Value::Bool(false)),
                (Value::Bool(_) | Value::Unknown, Value::Bool(_) | Value::Unknown) => Ok(Value::Unknown),
                (a, b) => err(format!("'{}' needs bools, got {a} and {b}", if op == Or { "||" } else { "&&" })),
            }
        }
        Eq | Ne => {
            let eq = match (&x, &y) {
                (Value::Sym(a), Value::Sym(b)) => Some(a == b),
                (Value::Sym(_) | Value::Unknown, _) | (_, Value::Sym(_) | Value::Unknown) => None,
                (Value::Str(a), Value::Str(b)) => Some(a == b),
                (Value::Bool(a), Value::Bool(b)) => Some(a == b),
                (a, b) => match (num(a), num(b)) {
                    (Some(a), Some(b)) => Some(a == b),
                    _ => return err(format!("cannot compare {a} with {b}")),
                },
            };
            return Ok(eq.map_or(Value::Unknown, |e| Value::Bool(e == (op == Eq))));
        }
        _ => {}
    }
    if matches!(x, Value::Sym(_) | Value::Unknown) || matches!(y, Value::Sym(_) | Value::Unknown) {
        return Ok(Value::Unknown);
    }
    if let (Value::Int(a), Value::Int(b)) = (&x, &y) {
        let (a, b) = (*a, *b);
        let overflow = || ExprError(format!("integer overflow in {a} {op:?} {b}"));
        return Ok(match op {
            Add => Value::Int(a.checked_add(b).ok_or_else(overflow)?),
            Sub => Value::Int(a.checked_sub(b).ok_or_else(overflow)?),
            Mul => Value::Int(a.checked_mul(b).ok_or_else(overflow)?),
            Div | Rem if b == 0 => return err(format!("division by zero in {a} {op:?} 0")),
            Div => Value::Int(a / b),
            Rem => Value::Int(a % b),
            Lt => Value::Bool(a < b),
            Le => Value::Bool(a <= b),
            Gt => Value::Bool(a > b),
            Ge => Value::Bool(a >= b),
            Or | And | Eq | Ne => unreachable_op(op)?,
        });
    }
    let (Some(a), Some(b)) = (num(&x), num(&y)) else {
        return err(format!("{op:?} needs numbers, got {x} and {y}"));
    };
    Ok(match op {
        Add => Value::Float(a + b),
        Sub => Value::Float(a - b),
        Mul => Value::Float(a * b),
        Div => Value::Float(a / b),
        Rem => return err("'%' needs integers"),
        Lt => Value::Bool(a < b),
        Le => Value::Bool(a <= b),
        Gt => Value::Bool(a > b),
        Ge => Value::Bool(a >= b),
        Or | And | Eq | Ne => unreachable_op(op)?,
    })
}

fn unreachable_op(op: BinOp) -> Result<Value, ExprError> {
    err(format!("internal: {op:?} handled above"))
}

pub use crate::parse::parse;
