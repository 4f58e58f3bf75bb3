//! The expression language of TOML model files: numbers, `config.*` references, names of
//! `[values]` entries and loop variables, `+ - * /`, unary minus, parentheses and `sqrt(...)`.
//! Parsed once at load time; evaluated per build against a [`Scope`].

use super::limits::MAX_EXPR_DEPTH;
use std::fmt;

/// A scalar an expression evaluates to. `Absent` is a config key that is present but unset
/// (`null`, e.g. `config.sliding_window` on a model without one).
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Absent,
}

impl Scalar {
    pub fn kind(&self) -> &'static str {
        match self {
            Scalar::Int(_) => "an integer",
            Scalar::Float(_) => "a float",
            Scalar::Bool(_) => "a bool",
            Scalar::Str(_) => "a string",
            Scalar::Absent => "unset",
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            Scalar::Int(v) => Some(*v as f64),
            Scalar::Float(v) => Some(*v),
            _ => None,
        }
    }

    /// Truthiness for `if_config`: non-zero numbers, `true`, non-empty strings.
    pub fn truthy(&self) -> bool {
        match self {
            Scalar::Int(v) => *v != 0,
            Scalar::Float(v) => *v != 0.0,
            Scalar::Bool(b) => *b,
            Scalar::Str(s) => !s.is_empty(),
            Scalar::Absent => false,
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Int(v) => write!(f, "{v}"),
            Scalar::Float(v) => write!(f, "{v}"),
            Scalar::Bool(v) => write!(f, "{v}"),
            Scalar::Str(v) => write!(f, "{v:?}"),
            Scalar::Absent => f.write_str("unset"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// A parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Int(i64),
    Float(f64),
    /// `config.a.b`: the path after `config.`.
    Config(Vec<String>),
    /// A `[values]` entry or a loop variable.
    Name(String),
    Neg(Box<Expr>),
    Sqrt(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
}

/// What an expression can look names up in.
pub trait Scope {
    /// `config.<path>`: `Ok(Absent)` for a key that exists but is unset, `Err` naming the
    /// reference (and close keys) when it does not exist.
    fn config(&self, path: &[String]) -> Result<Scalar, String>;
    /// A `[values]` entry or loop variable, or `None` if no such name.
    fn name(&self, name: &str) -> Result<Option<Scalar>, String>;
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(String),
    Ident(String),
    Op(char),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_') {
                // exponent sign: 1e-5
                i += 1;
                if i < chars.len() && (chars[i] == '-' || chars[i] == '+') && matches!(chars[i - 1], 'e' | 'E') {
                    i += 1;
                }
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if "+-*/()".contains(c) {
            out.push(Tok::Op(c));
            i += 1;
        } else {
            return Err(format!("unexpected character '{c}' (expressions use numbers, config.<key>, names, + - * / sqrt and parentheses)"));
        }
    }
    Ok(out)
}

/// A recursive-descent parser that keeps count of how deep it is: each nested parenthesis,
/// `sqrt`, unary minus or operator of a chain adds a level of the tree (or of the parser's own
/// recursion), and past [`MAX_EXPR_DEPTH`] the expression is refused, so neither parsing nor
/// walking the tree later can exhaust the stack.
struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

/// A parsed subexpression and the height of its tree.
type Parsed = Result<(Expr, usize), String>;

fn too_deep() -> String {
    format!("expression nested more than {MAX_EXPR_DEPTH} levels deep")
}

/// `Bin(op, lhs, rhs)`, one level above the taller of the two.
fn join(op: BinOp, (lhs, hl): (Expr, usize), (rhs, hr): (Expr, usize)) -> Parsed {
    let height = hl.max(hr) + 1;
    if height > MAX_EXPR_DEPTH {
        return Err(too_deep());
    }
    Ok((Expr::Bin(op, Box::new(lhs), Box::new(rhs)), height))
}

impl Parser {
    /// Runs `f` one recursion level deeper.
    fn nested(&mut self, f: impl FnOnce(&mut Self) -> Parsed) -> Parsed {
        if self.depth >= MAX_EXPR_DEPTH {
            return Err(too_deep());
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        let (e, h) = r?;
        if h + 1 > MAX_EXPR_DEPTH {
            return Err(too_deep());
        }
        Ok((e, h + 1))
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn eat_op(&mut self, op: char) -> bool {
        if self.peek() == Some(&Tok::Op(op)) {
            self.pos += 1;
            return true;
        }
        false
    }

    fn expr(&mut self) -> Parsed {
        let mut lhs = self.term()?;
        loop {
            let op = if self.eat_op('+') {
                BinOp::Add
            } else if self.eat_op('-') {
                BinOp::Sub
            } else {
                return Ok(lhs);
            };
            let rhs = self.term()?;
            lhs = join(op, lhs, rhs)?;
        }
    }

    fn term(&mut self) -> Parsed {
        let mut lhs = self.unary()?;
        loop {
            let op = if self.eat_op('*') {
                BinOp::Mul
            } else if self.eat_op('/') {
                BinOp::Div
            } else {
                return Ok(lhs);
            };
            let rhs = self.unary()?;
            lhs = join(op, lhs, rhs)?;
        }
    }

    fn unary(&mut self) -> Parsed {
        if self.eat_op('-') {
            let (e, h) = self.nested(Self::unary)?;
            return Ok((Expr::Neg(Box::new(e)), h));
        }
        self.atom()
    }

    fn atom(&mut self) -> Parsed {
        let tok = self.peek().cloned().ok_or("unexpected end of expression")?;
        self.pos += 1;
        let leaf = |e: Result<Expr, String>| e.map(|e| (e, 1));
        match tok {
            Tok::Num(text) => leaf(parse_number(&text)),
            Tok::Op('(') => {
                let e = self.nested(Self::expr)?;
                if !self.eat_op(')') {
                    return Err("missing ')'".into());
                }
                Ok(e)
            }
            Tok::Op(c) => Err(format!("unexpected '{c}'")),
            Tok::Ident(name) if name == "sqrt" => {
                if !self.eat_op('(') {
                    return Err("sqrt must be called as sqrt(...)".into());
                }
                let (e, h) = self.nested(Self::expr)?;
                if !self.eat_op(')') {
                    return Err("missing ')' after sqrt's argument".into());
                }
                Ok((Expr::Sqrt(Box::new(e)), h))
            }
            Tok::Ident(name) => leaf({
                let parts: Vec<&str> = name.split('.').collect();
                if parts.iter().any(|p| p.is_empty()) {
                    return Err(format!("malformed name '{name}'"));
                }
                match parts.as_slice() {
                    ["config"] => Err("'config' needs a key: config.<key>".into()),
                    ["config", rest @ ..] => Ok(Expr::Config(rest.iter().map(|s| s.to_string()).collect())),
                    [_] => Ok(Expr::Name(name)),
                    _ => Err(format!("unknown reference '{name}' (config keys are written config.<key>)")),
                }
            }),
        }
    }
}

fn parse_number(text: &str) -> Result<Expr, String> {
    if let Ok(v) = text.parse::<i64>() {
        return Ok(Expr::Int(v));
    }
    text.parse::<f64>().map(Expr::Float).map_err(|_| format!("malformed number '{text}'"))
}

impl Expr {
    /// Parses a whole expression.
    pub fn parse(src: &str) -> Result<Expr, String> {
        let mut p = Parser { toks: lex(src)?, pos: 0, depth: 0 };
        if p.toks.is_empty() {
            return Err("empty expression".into());
        }
        let (e, _) = p.expr()?;
        match p.peek() {
            None => Ok(e),
            Some(t) => Err(format!("unexpected {} after a complete expression", describe(t))),
        }
    }

    /// The single bare name this expression is, if it is one (used for symbolic dims).
    pub fn as_bare_name(&self) -> Option<&str> {
        match self {
            Expr::Name(n) => Some(n),
            _ => None,
        }
    }

    /// Evaluates. `+ - *` of two integers is an integer; `/` and `sqrt` give floats.
    pub fn eval(&self, scope: &dyn Scope) -> Result<Scalar, String> {
        match self {
            Expr::Int(v) => Ok(Scalar::Int(*v)),
            Expr::Float(v) => Ok(Scalar::Float(*v)),
            Expr::Config(path) => scope.config(path),
            Expr::Name(n) => scope.name(n)?.ok_or_else(|| format!("unknown name '{n}' (not a [values] entry or loop variable; literal strings are written {{ string = \"{n}\" }})")),
            Expr::Neg(e) => match e.eval(scope)? {
                Scalar::Int(v) => v.checked_neg().map(Scalar::Int).ok_or_else(|| format!("integer overflow in -({v})")),
                Scalar::Float(v) => Ok(Scalar::Float(-v)),
                other => Err(format!("cannot negate {} ({other})", other.kind())),
            },
            Expr::Sqrt(e) => {
                let v = e.eval(scope)?;
                let x = v.number().ok_or_else(|| format!("sqrt of {} ({v})", v.kind()))?;
                if x < 0.0 {
                    return Err(format!("sqrt of a negative number ({x})"));
                }
                Ok(Scalar::Float(x.sqrt()))
            }
            Expr::Bin(op, a, b) => binary(*op, a.eval(scope)?, b.eval(scope)?),
        }
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Num(n) => format!("number '{n}'"),
        Tok::Ident(n) => format!("name '{n}'"),
        Tok::Op(c) => format!("'{c}'"),
    }
}

fn binary(op: BinOp, a: Scalar, b: Scalar) -> Result<Scalar, String> {
    let sym = match op {
        BinOp::Add => '+',
        BinOp::Sub => '-',
        BinOp::Mul => '*',
        BinOp::Div => '/',
    };
    if let (Scalar::Int(x), Scalar::Int(y), false) = (&a, &b, op == BinOp::Div) {
        let r = match op {
            BinOp::Add => x.checked_add(*y),
            BinOp::Sub => x.checked_sub(*y),
            _ => x.checked_mul(*y),
        };
        return r.map(Scalar::Int).ok_or_else(|| format!("integer overflow in {x} {sym} {y}"));
    }
    let (Some(x), Some(y)) = (a.number(), b.number()) else {
        return Err(format!("'{sym}' needs numbers, got {} ({a}) and {} ({b})", a.kind(), b.kind()));
    };
    if op == BinOp::Div && y == 0.0 {
        return Err(format!("division by zero ({x} / {y})"));
    }
    Ok(Scalar::Float(match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => x / y,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct S;
    impl Scope for S {
        fn config(&self, path: &[String]) -> Result<Scalar, String> {
            match path.join(".").as_str() {
                "head_dim" => Ok(Scalar::Int(64)),
                "rms_norm_eps" => Ok(Scalar::Float(1e-5)),
                "sliding_window" => Ok(Scalar::Absent),
                other => Err(format!("unknown config reference 'config.{other}'")),
            }
        }
        fn name(&self, name: &str) -> Result<Option<Scalar>, String> {
            Ok((name == "layer").then_some(Scalar::Int(3)))
        }
    }

    fn eval(src: &str) -> Result<Scalar, String> {
        Expr::parse(src)?.eval(&S)
    }

    #[test]
    fn arithmetic_and_types() {
        assert_eq!(eval("1.0 / sqrt(config.head_dim)").unwrap(), Scalar::Float(0.125));
        assert_eq!(eval("2 * (config.head_dim + layer) - 1").unwrap(), Scalar::Int(133));
        assert_eq!(eval("-layer * 2").unwrap(), Scalar::Int(-6));
        assert_eq!(eval("config.head_dim / 2").unwrap(), Scalar::Float(32.0));
        assert_eq!(eval("1e-5").unwrap(), Scalar::Float(1e-5));
        assert_eq!(eval("config.rms_norm_eps * 2").unwrap(), Scalar::Float(2e-5));
        assert_eq!(eval("config.sliding_window").unwrap(), Scalar::Absent);
    }

    #[test]
    fn errors_are_messages() {
        assert!(eval("config.hidden_sise").unwrap_err().contains("config.hidden_sise"));
        assert!(eval("nope").unwrap_err().contains("unknown name 'nope'"));
        assert!(eval("1 / 0").unwrap_err().contains("division by zero"));
        assert!(eval("sqrt(-1)").unwrap_err().contains("negative"));
        assert!(Expr::parse("(1 + 2").unwrap_err().contains("missing ')'"));
        assert!(Expr::parse("1 2").unwrap_err().contains("after a complete expression"));
        assert!(Expr::parse("a $ b").unwrap_err().contains("unexpected character"));
        assert!(Expr::parse("").unwrap_err().contains("empty"));
        assert!(eval("config.sliding_window + 1").unwrap_err().contains("needs numbers"));
    }
}
