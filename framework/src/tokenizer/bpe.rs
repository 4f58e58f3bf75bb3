//! The BPE model: the vocabulary, the merge table (from ranked merges or from SentencePiece
//! scores), and the merge loop that turns one pre-token into ids, with byte fallback, unknown
//! tokens and a bounded cache of recent pre-tokens.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

use super::TokenizerError;

/// Token strings by id and the reverse map.
#[derive(Debug, Clone)]
pub struct Vocab {
    pub tokens: Strings,
    index: IdIndex,
}

/// Strings packed in one buffer (a 49k vocabulary as `Vec<String>` costs ~2.7 MiB in small
/// allocations; packed, ~0.5 MiB): string i is `bytes[ends[i-1]..ends[i]]`.
#[derive(Debug, Clone, Default)]
pub struct Strings {
    bytes: String,
    ends: Vec<usize>,
}

impl Strings {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.bytes.get(start..end)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl From<Vec<String>> for Strings {
    fn from(strings: Vec<String>) -> Strings {
        let mut packed =
            Strings { bytes: String::with_capacity(strings.iter().map(String::len).sum()), ends: Vec::new() };
        packed.ends.reserve_exact(strings.len());
        for s in strings {
            packed.bytes.push_str(&s);
            packed.ends.push(packed.bytes.len());
        }
        packed
    }
}

impl std::ops::Index<usize> for Strings {
    type Output = str;

    fn index(&self, i: usize) -> &str {
        match self.get(i) {
            Some(s) => s,
            None => panic!("string {i} of {}", self.len()),
        }
    }
}

impl<'a> IntoIterator for &'a Strings {
    type Item = &'a str;
    type IntoIter = Box<dyn Iterator<Item = &'a str> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl Vocab {
    /// Builds the reverse map; when a string appears twice the lower id wins (as HF and llama.cpp).
    pub fn new(tokens: Vec<String>) -> Result<Vocab, TokenizerError> {
        if tokens.is_empty() {
            return Err(TokenizerError::Invalid("the vocabulary is empty".into()));
        }
        if u32::try_from(tokens.len()).is_err() {
            return Err(TokenizerError::Invalid(format!("vocabulary of {} tokens is too large", tokens.len())));
        }
        let tokens = Strings::from(tokens);
        let index = IdIndex::new(&tokens);
        Ok(Vocab { tokens, index })
    }

    pub fn id(&self, token: &str) -> Option<u32> {
        self.index.get(&self.tokens, token)
    }
}

/// The reverse map as an open-addressing table of ids (linear probing, at most half full):
/// the strings stay in [`Vocab::tokens`], so a 49k vocabulary costs 512 KiB here instead of a
/// `HashMap<String, u32>`'s 2 MiB table plus a cloned key per token.
#[derive(Debug, Clone)]
struct IdIndex {
    /// Power-of-two length; [`IdIndex::EMPTY`] marks a free slot.
    slots: Vec<u32>,
}

impl IdIndex {
    const EMPTY: u32 = u32::MAX;

    /// Indexes `tokens` (fewer than `u32::MAX`); the lowest id of a repeated string wins.
    fn new(tokens: &Strings) -> IdIndex {
        let mut index = IdIndex { slots: vec![Self::EMPTY; (tokens.len() * 2).next_power_of_two().max(2)] };
        for (id, token) in tokens.iter().enumerate() {
            let slot = index.probe(tokens, token);
            if index.slots[slot] == Self::EMPTY {
                index.slots[slot] = id as u32;
            }
        }
        index
    }

    /// The slot holding `token`, or the free slot where it would go.
    fn probe(&self, tokens: &Strings, token: &str) -> usize {
        let mask = self.slots.len() - 1;
        let mut slot = (Self::hash(token) as usize) & mask;
        loop {
            let id = self.slots[slot];
            if id == Self::EMPTY || tokens.get(id as usize).is_some_and(|t| t == token) {
                return slot;
            }
            slot = (slot + 1) & mask;
        }
    }

    fn get(&self, tokens: &Strings, token: &str) -> Option<u32> {
        let id = self.slots[self.probe(tokens, token)];
        (id != Self::EMPTY).then_some(id)
    }

    /// FNV-1a, high bits folded in (the mask keeps the low ones).
    fn hash(s: &str) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in s.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        h ^ (h >> 29) ^ (h >> 47)
    }
}

/// Options of the BPE model (HF `model` fields).
#[derive(Debug, Clone, Default)]
pub struct BpeOptions {
    /// Unknown characters become `<0xNN>` byte tokens when all of them exist.
    pub byte_fallback: bool,
    /// The id used for characters the vocabulary cannot express.
    pub unk_id: Option<u32>,
    /// Consecutive unknown characters produce a single unknown token.
    pub fuse_unk: bool,
    /// A pre-token that is itself in the vocabulary is emitted whole, without merging.
    pub ignore_merges: bool,
}

const CACHE_CAPACITY: usize = 32_768;
const CACHE_MAX_WORD_BYTES: usize = 128;

/// A BPE model: merges keyed by the pair of ids, each with its priority (lower first) and result.
#[derive(Debug)]
pub struct Bpe {
    merges: HashMap<(u32, u32), (u32, u32)>,
    opts: BpeOptions,
    byte_ids: Option<[u32; 256]>,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl Bpe {
    /// From merges in priority order, each as (left, right) token strings.
    pub fn from_merges(vocab: &Vocab, merges: &[(String, String)], opts: BpeOptions) -> Result<Bpe, TokenizerError> {
        let mut table = HashMap::with_capacity(merges.len());
        for (rank, (l, r)) in merges.iter().enumerate() {
            let missing = |t: &str| {
                TokenizerError::Invalid(format!(
                    "merge \"{l} {r}\" (rank {rank}): token {t:?} is not in the vocabulary"
                ))
            };
            let a = vocab.id(l).ok_or_else(|| missing(l))?;
            let b = vocab.id(r).ok_or_else(|| missing(r))?;
            let merged = format!("{l}{r}");
            let m = vocab.id(&merged).ok_or_else(|| missing(&merged))?;
            table.entry((a, b)).or_insert((rank as u32, m));
        }
        Ok(Bpe::with_table(vocab, table, opts))
    }

    /// From SentencePiece scores (llama.cpp's SPM tokenizer): any adjacent pair whose
    /// concatenation is a mergeable token merges, the highest-scoring result first.
    pub fn from_scores(
        vocab: &Vocab,
        scores: &[f32],
        mergeable: &[bool],
        opts: BpeOptions,
    ) -> Result<Bpe, TokenizerError> {
        if scores.len() != vocab.tokens.len() {
            return Err(TokenizerError::Invalid(format!("{} scores for {} tokens", scores.len(), vocab.tokens.len())));
        }
        let mut distinct: Vec<f32> = scores.to_vec();
        distinct.sort_by(|a, b| b.total_cmp(a));
        distinct.dedup_by(|a, b| a.total_cmp(b) == Ordering::Equal);
        let rank_of = |s: f32| distinct.partition_point(|d| d.total_cmp(&s) == Ordering::Greater) as u32;
        let mut table = HashMap::new();
        for (id, token) in vocab.tokens.iter().enumerate() {
            if !mergeable.get(id).copied().unwrap_or(true) || vocab.id(token) != Some(id as u32) {
                continue;
            }
            for (split, _) in token.char_indices().skip(1) {
                if let (Some(a), Some(b)) = (vocab.id(&token[..split]), vocab.id(&token[split..])) {
                    table.entry((a, b)).or_insert((rank_of(scores[id]), id as u32));
                }
            }
        }
        Ok(Bpe::with_table(vocab, table, opts))
    }

    fn with_table(vocab: &Vocab, merges: HashMap<(u32, u32), (u32, u32)>, opts: BpeOptions) -> Bpe {
        let byte_ids = if opts.byte_fallback {
            let mut ids = [0u32; 256];
            let mut all = true;
            for (b, slot) in ids.iter_mut().enumerate() {
                match vocab.id(&format!("<0x{b:02X}>")) {
                    Some(id) => *slot = id,
                    None => all = false,
                }
            }
            all.then_some(ids)
        } else {
            None
        };
        Bpe { merges, opts, byte_ids, cache: Mutex::new(HashMap::new()) }
    }

    /// Appends the ids of one pre-token (already in the vocabulary's alphabet) to `out`.
    pub fn tokenize(&self, vocab: &Vocab, word: &str, out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if self.opts.ignore_merges {
            if let Some(id) = vocab.id(word) {
                out.push(id);
                return;
            }
        }
        let cacheable = word.len() <= CACHE_MAX_WORD_BYTES;
        if cacheable {
            if let Ok(cache) = self.cache.lock() {
                if let Some(ids) = cache.get(word) {
                    out.extend_from_slice(ids);
                    return;
                }
            }
        }
        let ids = self.merge(self.initial_symbols(vocab, word));
        out.extend_from_slice(&ids);
        if cacheable {
            if let Ok(mut cache) = self.cache.lock() {
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(word.to_owned(), ids);
            }
        }
    }

    /// One symbol per character; characters outside the vocabulary become byte tokens or `unk`.
    fn initial_symbols(&self, vocab: &Vocab, word: &str) -> Vec<u32> {
        let mut symbols = Vec::with_capacity(word.len());
        let mut buf = [0u8; 4];
        let mut last_unk = false;
        for c in word.chars() {
            let s: &str = c.encode_utf8(&mut buf);
            if let Some(id) = vocab.id(s) {
                symbols.push(id);
                last_unk = false;
            } else if let Some(bytes) = &self.byte_ids {
                symbols.extend(s.bytes().map(|b| bytes[b as usize]));
                last_unk = false;
            } else if let Some(unk) = self.opts.unk_id {
                if !(self.opts.fuse_unk && last_unk) {
                    symbols.push(unk);
                }
                last_unk = true;
            }
        }
        symbols
    }

    /// The merge loop: repeatedly applies the best-priority merge (leftmost among equals).
    fn merge(&self, mut ids: Vec<u32>) -> Vec<u32> {
        let n = ids.len();
        if n < 2 {
            return ids;
        }
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::new();
        for i in 0..n - 1 {
            if let Some(&(rank, new_id)) = self.merges.get(&(ids[i], ids[i + 1])) {
                heap.push(Candidate { rank, pos: i, new_id });
            }
        }
        while let Some(Candidate { pos, new_id, .. }) = heap.pop() {
            if !alive[pos] || next[pos] >= n {
                continue;
            }
            let right = next[pos];
            match self.merges.get(&(ids[pos], ids[right])) {
                Some(&(_, id)) if id == new_id => {}
                _ => continue,
            }
            ids[pos] = new_id;
            alive[right] = false;
            next[pos] = next[right];
            if next[pos] < n {
                prev[next[pos]] = pos;
            }
            if prev[pos] < n {
                let p = prev[pos];
                if let Some(&(rank, new_id)) = self.merges.get(&(ids[p], ids[pos])) {
                    heap.push(Candidate { rank, pos: p, new_id });
                }
            }
            if next[pos] < n {
                if let Some(&(rank, new_id)) = self.merges.get(&(ids[pos], ids[next[pos]])) {
                    heap.push(Candidate { rank, pos, new_id });
                }
            }
        }
        (0..n).filter(|&i| alive[i]).map(|i| ids[i]).collect()
    }
}

impl Clone for Bpe {
    /// A copy with an empty cache.
    fn clone(&self) -> Bpe {
        Bpe { merges: self.merges.clone(), opts: self.opts.clone(), byte_ids: self.byte_ids, cache: Mutex::default() }
    }
}

#[derive(PartialEq, Eq)]
struct Candidate {
    rank: u32,
    pos: usize,
    new_id: u32,
}

impl Ord for Candidate {
    /// Max-heap order: the lowest rank first, then the leftmost position.
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank.cmp(&self.rank).then_with(|| other.pos.cmp(&self.pos))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(tokens: &[&str]) -> Vocab {
        Vocab::new(tokens.iter().map(|s| s.to_string()).collect()).unwrap()
    }

    fn pairs(merges: &[&str]) -> Vec<(String, String)> {
        merges.iter().map(|m| m.split_once(' ').map(|(a, b)| (a.into(), b.into())).unwrap()).collect()
    }

    #[test]
    fn reverse_map_finds_every_token_and_keeps_the_lowest_duplicate() {
        let v = vocab(&["a", "b", "a", "", "ab", "b"]);
        assert_eq!((v.id("a"), v.id("b"), v.id(""), v.id("ab")), (Some(0), Some(1), Some(3), Some(4)));
        assert_eq!((v.id("c"), v.id("abc"), v.id("A")), (None, None, None));
        let many: Vec<String> = (0..50_000).map(|i| format!("t{i:x}")).collect();
        let v = Vocab::new(many.clone()).unwrap();
        assert!(many.iter().enumerate().all(|(i, t)| v.id(t) == Some(i as u32)));
        assert_eq!(v.id("t"), None);
        assert_eq!(v.id("x1"), None);
    }

    fn run(bpe: &Bpe, v: &Vocab, word: &str) -> Vec<String> {
        let mut ids = vec![];
        bpe.tokenize(v, word, &mut ids);
        ids.iter().map(|&i| v.tokens[i as usize].to_string()).collect()
    }

    #[test]
    fn merges_follow_rank_not_position() {
        let v = vocab(&["a", "b", "c", "ab", "bc", "abc"]);
        // "b c" outranks "a b", so "abc" → a + bc, and "a bc" is not a merge.
        let bpe = Bpe::from_merges(&v, &pairs(&["b c", "a b", "ab c"]), BpeOptions::default()).unwrap();
        assert_eq!(run(&bpe, &v, "abc"), ["a", "bc"]);
        let bpe = Bpe::from_merges(&v, &pairs(&["a b", "b c", "ab c"]), BpeOptions::default()).unwrap();
        assert_eq!(run(&bpe, &v, "abc"), ["abc"]);
        // Twice, to exercise the cache.
        assert_eq!(run(&bpe, &v, "abcabc"), ["abc", "abc"]);
        assert_eq!(run(&bpe, &v, "abcabc"), ["abc", "abc"]);
    }

    #[test]
    fn equal_ranks_merge_leftmost_first() {
        let v = vocab(&["a", "aa", "aaa"]);
        let bpe = Bpe::from_merges(&v, &pairs(&["a a", "aa a"]), BpeOptions::default()).unwrap();
        assert_eq!(run(&bpe, &v, "aaa"), ["aaa"]);
        assert_eq!(run(&bpe, &v, "aaaaa"), ["aa", "aaa"]);
    }

    #[test]
    fn missing_merge_token_is_an_error() {
        let v = vocab(&["a", "b"]);
        let err = Bpe::from_merges(&v, &pairs(&["a b"]), BpeOptions::default()).unwrap_err();
        assert!(err.to_string().contains("\"ab\""), "{err}");
    }

    #[test]
    fn scores_byte_fallback_and_unk() {
        let mut toks: Vec<String> = ["<unk>", "▁", "h", "i", "▁h", "▁hi", "hi"].iter().map(|s| s.to_string()).collect();
        toks.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        let v = Vocab::new(toks).unwrap();
        let mut scores = vec![0.0f32; v.tokens.len()];
        scores[4] = -1.0; // ▁h
        scores[5] = -0.5; // ▁hi
        scores[6] = -0.1; // hi: higher than ▁h, so "▁hi" is reached through ▁ + hi
        let mergeable: Vec<bool> = (0..v.tokens.len()).map(|i| i < 7).collect();
        let opts = BpeOptions { byte_fallback: true, unk_id: Some(0), ..Default::default() };
        let bpe = Bpe::from_scores(&v, &scores, &mergeable, opts).unwrap();
        assert_eq!(run(&bpe, &v, "▁hi"), ["▁hi"]);
        assert_eq!(run(&bpe, &v, "▁hé"), ["▁h", "<0xC3>", "<0xA9>"]);
        let opts = BpeOptions { unk_id: Some(0), fuse_unk: true, ..Default::default() };
        let bpe = Bpe::from_scores(&v, &scores, &mergeable, opts).unwrap();
        assert_eq!(run(&bpe, &v, "ééhi"), ["<unk>", "hi"]);
    }
}
