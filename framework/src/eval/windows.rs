//! The sliding windows of a perplexity evaluation, as in Hugging Face's "Perplexity of
//! fixed-length models" guide: windows of `context` tokens start every `stride` tokens, the last
//! one ends at the text's end, and each window scores only the tokens no earlier window scored
//! (with the context the window gives them). A window's first token is never scored: nothing
//! comes before it. With `stride == context` the windows do not overlap and each window's first
//! token goes unscored; with `stride < context` every token but the text's first is scored once.

use serde::Serialize;

/// One window: the prompt `tokens[begin..end]`, scoring positions `score_from..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    pub begin: usize,
    pub end: usize,
    pub score_from: usize,
}

impl Window {
    /// Tokens this window scores.
    pub fn scored(&self) -> usize {
        self.end - self.score_from
    }

    /// The first scored position within the window's own prompt (>= 1).
    pub fn first_scored_in_window(&self) -> usize {
        self.score_from - self.begin
    }
}

/// Why no windows can be laid over a text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("the text has {0} token(s); perplexity needs at least 2 (one to condition on, one to score)")]
    TooShort(usize),
    #[error("context length {0} is too small: a window needs at least 2 tokens")]
    Context(usize),
    #[error("stride {stride} must be between 1 and the context length ({context})")]
    Stride { stride: usize, context: usize },
}

/// The windows over a text of `num_tokens` tokens.
pub fn plan(num_tokens: usize, context: usize, stride: usize) -> Result<Vec<Window>, WindowError> {
    if context < 2 {
        return Err(WindowError::Context(context));
    }
    if stride == 0 || stride > context {
        return Err(WindowError::Stride { stride, context });
    }
    if num_tokens < 2 {
        return Err(WindowError::TooShort(num_tokens));
    }
    let mut windows = Vec::new();
    let (mut begin, mut prev_end) = (0, 0);
    loop {
        let end = (begin + context).min(num_tokens);
        let score_from = prev_end.max(begin + 1);
        if score_from < end {
            windows.push(Window { begin, end, score_from });
        }
        prev_end = end;
        if end == num_tokens {
            return Ok(windows);
        }
        begin += stride;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored_positions(w: &[Window]) -> Vec<usize> {
        w.iter().flat_map(|w| w.score_from..w.end).collect()
    }

    #[test]
    fn overlapping_windows_score_every_token_but_the_first_once() {
        let w = plan(10, 4, 2).unwrap();
        assert_eq!(
            w,
            vec![
                Window { begin: 0, end: 4, score_from: 1 },
                Window { begin: 2, end: 6, score_from: 4 },
                Window { begin: 4, end: 8, score_from: 6 },
                Window { begin: 6, end: 10, score_from: 8 },
            ]
        );
        assert_eq!(scored_positions(&w), (1..10).collect::<Vec<_>>());
        assert_eq!(w[1].first_scored_in_window(), 2);
        // A last window shorter than the stride.
        let w = plan(11, 4, 3).unwrap();
        assert_eq!(w.last(), Some(&Window { begin: 9, end: 11, score_from: 10 }));
        assert_eq!(scored_positions(&w), (1..11).collect::<Vec<_>>());
    }

    #[test]
    fn disjoint_windows_skip_each_first_token() {
        let w = plan(9, 4, 4).unwrap();
        assert_eq!(scored_positions(&w), vec![1, 2, 3, 5, 6, 7]);
        // The 1-token tail window scores nothing and is dropped.
        assert_eq!(w.len(), 2);
        // A text within one window.
        assert_eq!(plan(3, 2048, 1024).unwrap(), vec![Window { begin: 0, end: 3, score_from: 1 }]);
        assert_eq!(plan(2, 2, 1).unwrap().iter().map(Window::scored).sum::<usize>(), 1);
    }

    #[test]
    fn bad_settings_are_named() {
        assert_eq!(plan(1, 8, 4), Err(WindowError::TooShort(1)));
        assert_eq!(plan(0, 8, 4), Err(WindowError::TooShort(0)));
        assert_eq!(plan(10, 1, 1), Err(WindowError::Context(1)));
        assert_eq!(plan(10, 8, 0), Err(WindowError::Stride { stride: 0, context: 8 }));
        assert_eq!(plan(10, 8, 9), Err(WindowError::Stride { stride: 9, context: 8 }));
        assert!(plan(10, 8, 9).unwrap_err().to_string().contains("stride 9"));
    }
}
