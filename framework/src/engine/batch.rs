//! One forward pass's packed inputs: the tokens of every scheduled sequence laid end to end,
//! their positions, each sequence's block table and lengths, and the rows to return logits for
//! (a sequence's last new token when it samples next; every token of a range when its prompt's
//! log-probabilities are wanted).

use std::ops::Range;

/// Packed inputs of one step. `block_tables` is `seq_lens.len() × max_blocks` row-major.
#[derive(Clone, Debug, Default)]
pub struct StepBatch {
    pub input_ids: Vec<i32>,
    pub positions: Vec<i32>,
    pub block_tables: Vec<i32>,
    pub max_blocks: usize,
    pub seq_lens: Vec<i32>,
    pub query_start: Vec<i32>,
    pub logits_indices: Vec<i32>,
}

impl StepBatch {
    pub fn num_tokens(&self) -> usize {
        self.input_ids.len()
    }

    pub fn num_seqs(&self) -> usize {
        self.seq_lens.len()
    }

    pub fn clear(&mut self) {
        self.input_ids.clear();
        self.positions.clear();
        self.block_tables.clear();
        self.max_blocks = 0;
        self.seq_lens.clear();
        self.query_start.clear();
        self.query_start.push(0);
        self.logits_indices.clear();
    }

    /// Appends one sequence's new tokens. `start_pos` is the position of `tokens[0]`;
    /// `blocks` its block table; `want_logits` asks for the logits of its last new token.
    pub fn push_sequence(&mut self, tokens: &[u32], start_pos: usize, blocks: &[u32], want_logits: bool) {
        self.push_sequence_with_rows(tokens, start_pos, blocks, 0..0, want_logits);
    }

    /// [`StepBatch::push_sequence`] that also asks for the logits of every new token whose
    /// position is in `rows` (absolute positions, clipped to this chunk), in position order and
    /// before the last token's row.
    pub fn push_sequence_with_rows(
        &mut self,
        tokens: &[u32],
        start_pos: usize,
        blocks: &[u32],
        rows: Range<usize>,
        want_logits: bool,
    ) {
        if self.query_start.is_empty() {
            self.query_start.push(0);
        }
        let first = self.input_ids.len();
        self.input_ids.extend(tokens.iter().map(|&t| t as i32));
        self.positions.extend((0..tokens.len()).map(|i| (start_pos + i) as i32));
        self.seq_lens.push((start_pos + tokens.len()) as i32);
        self.query_start.push(self.input_ids.len() as i32);
        let last = start_pos + tokens.len();
        let wanted = rows.start.max(start_pos)..rows.end.min(last);
        let last_wanted = want_logits && !tokens.is_empty();
        for pos in wanted.filter(|&p| !(last_wanted && p + 1 == last)) {
            self.logits_indices.push((first + pos - start_pos) as i32);
        }
        if last_wanted {
            self.logits_indices.push((first + tokens.len() - 1) as i32);
        }
        // Widen the block-table matrix if this sequence needs more columns.
        if blocks.len() > self.max_blocks {
            let old = self.max_blocks;
            let rows = self.seq_lens.len() - 1;
            let mut widened = Vec::with_capacity((rows + 1) * blocks.len());
            for r in 0..rows {
                widened.extend_from_slice(&self.block_tables[r * old..(r + 1) * old]);
                widened.extend(std::iter::repeat_n(0, blocks.len() - old));
            }
            self.block_tables = widened;
            self.max_blocks = blocks.len();
        }
        self.block_tables.extend(blocks.iter().map(|&b| b as i32));
        self.block_tables.extend(std::iter::repeat_n(0, self.max_blocks - blocks.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_sequences_and_widens_tables() {
        let mut b = StepBatch::default();
        b.clear();
        b.push_sequence(&[1, 2, 3], 0, &[7], true);
        b.push_sequence(&[9], 40, &[3, 4], true);
        assert_eq!(b.input_ids, vec![1, 2, 3, 9]);
        assert_eq!(b.positions, vec![0, 1, 2, 40]);
        assert_eq!(b.seq_lens, vec![3, 41]);
        assert_eq!(b.query_start, vec![0, 3, 4]);
        assert_eq!(b.logits_indices, vec![2, 3]);
        assert_eq!(b.max_blocks, 2);
        assert_eq!(b.block_tables, vec![7, 0, 3, 4]);
    }

    #[test]
    fn rows_of_a_range_come_before_the_last_token() {
        let mut b = StepBatch::default();
        b.clear();
        b.push_sequence(&[1], 9, &[0], true);
        // Positions 10..14 of a chunk at 10..15, rows wanted at 8..13 (clipped to 10..13).
        b.push_sequence_with_rows(&[1, 2, 3, 4, 5], 10, &[1], 8..13, true);
        assert_eq!(b.logits_indices, vec![0, 1, 2, 3, 5]);
        // A range reaching the last token gives its row once.
        b.push_sequence_with_rows(&[6, 7], 0, &[2], 0..2, true);
        assert_eq!(&b.logits_indices[5..], &[6, 7]);
        b.push_sequence_with_rows(&[8, 9], 0, &[3], 1..5, false);
        assert_eq!(&b.logits_indices[7..], &[9]);
    }
}
