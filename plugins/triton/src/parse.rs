//! Parser of the manifest's expression language (see `expr` for the grammar): a tokenizer and
//! a precedence-climbing parser producing [`Expr`].

use crate::expr::{BinOp, Expr, ExprError, Field};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(i64),
    Float(f64),
    Str(String),
    Ident(String),
    Op(&'static str),
}

const OPS: [&str; 20] =
    ["||", "&&", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "!", "(", ")", "[", "]", ",", "."];

fn tokenize(src: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                // exponents: 1e-6
                if (b[i] == b'e' || b[i] == b'E') && i + 1 < b.len() && (b[i + 1] == b'-' || b[i + 1] == b'+') {
                    i += 1;
                }
                i += 1;
            }
            let text = &src[start..i];
            let tok = if let Ok(v) = text.parse::<i64>() {
                Tok::Int(v)
            } else if let Ok(v) = text.parse::<f64>() {
                Tok::Float(v)
            } else {
                return Err(ExprError(format!("bad number '{text}' at column {}", start + 1)));
            };
            out.push((start, tok));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((start, Tok::Ident(src[start..i].to_string())));
        } else if c == '"' {
            let start = i;
            i += 1;
            let s0 = i;
            while i < b.len() && b[i] != b'"' {
                i += 1;
            }
            if i >= b.len() {
                return Err(ExprError(format!("unterminated string at column {}", start + 1)));
            }
            out.push((start, Tok::Str(src[s0..i].to_string())));
            i += 1;
        } else if let Some(op) = OPS.iter().find(|op| src[i..].starts_with(**op)) {
            out.push((i, Tok::Op(op)));
            i += op.len();
        } else {
            return Err(ExprError(format!("unexpected character '{c}' at column {}", i + 1)));
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    len: usize,
}

fn binop(op: &str) -> Option<(BinOp, u8)> {
    Some(match op {
        "||" => (BinOp::Or, 1),
        "&&" => (BinOp::And, 2),
        "==" => (BinOp::Eq, 3),
        "!=" => (BinOp::Ne, 3),
        "<" => (BinOp::Lt, 3),
        "<=" => (BinOp::Le, 3),
        ">" => (BinOp::Gt, 3),
        ">=" => (BinOp::Ge, 3),
        "+" => (BinOp::Add, 4),
        "-" => (BinOp::Sub, 4),
        "*" => (BinOp::Mul, 5),
        "/" => (BinOp::Div, 5),
        "%" => (BinOp::Rem, 5),
        _ => return None,
    })
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.1)
    }

    fn col(&self) -> usize {
        self.toks.get(self.pos).map_or(self.len, |t| t.0) + 1
    }

    fn fail<T>(&self, what: &str) -> Result<T, ExprError> {
        Err(ExprError(format!("{what} at column {}", self.col())))
    }

    fn eat(&mut self, op: &str) -> bool {
        if self.peek() == Some(&Tok::Op(OPS.iter().find(|o| **o == op).copied().unwrap_or("?"))) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, op: &str) -> Result<(), ExprError> {
        if self.eat(op) {
            Ok(())
        } else {
            self.fail(&format!("expected '{op}'"))
        }
    }

    fn expr(&mut self, min_prec: u8) -> Result<Expr, ExprError> {
        let mut lhs = self.unary()?;
        loop {
            let Some(Tok::Op(op)) = self.peek() else { break };
            let Some((bop, prec)) = binop(op) else { break };
            if prec < min_prec {
                break;
            }
            self.pos += 1;
            let rhs = self.expr(prec + 1)?;
            lhs = Expr::Bin(bop, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.eat("-") {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let Some(tok) = self.peek().cloned() else { return self.fail("unexpected end of expression") };
        self.pos += 1;
        match tok {
            Tok::Int(v) => Ok(Expr::Int(v)),
            Tok::Float(v) => Ok(Expr::Float(v)),
            Tok::Str(s) => Ok(Expr::Str(s)),
            Tok::Op("(") => {
                let e = self.expr(0)?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Ident(name) if name == "true" || name == "false" => Ok(Expr::Bool(name == "true")),
            Tok::Ident(name) => {
                if self.eat("(") {
                    let mut args = Vec::new();
                    if !self.eat(")") {
                        loop {
                            args.push(self.expr(0)?);
                            if self.eat(")") {
                                break;
                            }
                            self.expect(",")?;
                        }
                    }
                    return Ok(Expr::Call(name, args));
                }
                if self.eat(".") {
                    return self.field(name);
                }
                Ok(Expr::Name(name))
            }
            Tok::Op(op) => {
                self.pos -= 1;
                self.fail(&format!("unexpected '{op}'"))
            }
        }
    }

    fn field(&mut self, tensor: String) -> Result<Expr, ExprError> {
        let Some(Tok::Ident(f)) = self.peek().cloned() else { return self.fail("expected a field name after '.'") };
        self.pos += 1;
        let field = match f.as_str() {
            "shape" => {
                self.expect("[")?;
                let Some(Tok::Int(i)) = self.peek().cloned() else { return self.fail("expected a dim index") };
                self.pos += 1;
                self.expect("]")?;
                Field::Shape(usize::try_from(i).map_err(|_| ExprError(format!("negative dim index {i}")))?)
            }
            "rank" => Field::Rank,
            "numel" => Field::Numel,
            "itemsize" => Field::Itemsize,
            "ptr" => Field::Ptr,
            "dtype" => Field::Dtype,
            other => {
                self.pos -= 1;
                return self
                    .fail(&format!("unknown tensor field '{other}' (shape[i], rank, numel, itemsize, ptr, dtype)"));
            }
        };
        Ok(Expr::Field(tensor, field))
    }
}

/// Parses one expression.
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    let mut p = Parser { toks: tokenize(src)?, pos: 0, len: src.len() };
    let e = p.expr(0)?;
    if p.pos != p.toks.len() {
        return p.fail("unexpected trailing input");
    }
    Ok(e)
}
