//! CUDA graphs of decode steps, one per batch-size bucket: a decode step of S sequences is
//! padded to the smallest bucket >= S and replays that bucket's graph (captured the first time
//! the bucket runs), so a steady decode loop costs one graph launch instead of one launch per op.

use crate::device::CudaGraph;
use std::collections::HashMap;

pub(super) struct DecodeGraphs {
    buckets: Vec<usize>,
    graphs: HashMap<usize, CudaGraph>,
}

impl DecodeGraphs {
    /// Buckets 1, 2, 4, 8, then multiples of 8 up to `max_batch` (vLLM's capture sizes), all
    /// within `max_tokens` (a padded decode step has one token per bucket row).
    pub fn new(max_batch: usize, max_tokens: usize) -> DecodeGraphs {
        let limit = max_batch.min(max_tokens);
        let mut buckets: Vec<usize> = [1, 2, 4].into_iter().filter(|&b| b <= limit).collect();
        buckets.extend((8..=limit).step_by(8));
        if buckets.last() != Some(&limit) && limit > 0 {
            buckets.push(limit);
        }
        DecodeGraphs { buckets, graphs: HashMap::new() }
    }

    /// The bucket a decode step of `seqs` sequences pads to.
    pub fn bucket_for(&self, seqs: usize) -> Option<usize> {
        self.buckets.iter().copied().find(|&b| b >= seqs)
    }

    pub fn get(&self, bucket: usize) -> Option<&CudaGraph> {
        self.graphs.get(&bucket)
    }

    pub fn insert(&mut self, bucket: usize, graph: CudaGraph) {
        self.graphs.insert(bucket, graph);
    }

    pub fn captured(&self) -> usize {
        self.graphs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_batch_size() {
        let g = DecodeGraphs::new(20, 2048);
        assert_eq!(g.buckets, vec![1, 2, 4, 8, 16, 20]);
        assert_eq!(g.bucket_for(3), Some(4));
        assert_eq!(g.bucket_for(17), Some(20));
        assert_eq!(g.bucket_for(21), None);
        assert_eq!(DecodeGraphs::new(256, 64).bucket_for(64), Some(64));
        assert_eq!(DecodeGraphs::new(256, 64).bucket_for(65), None);
    }
}
