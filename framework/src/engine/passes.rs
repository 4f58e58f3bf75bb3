//! The passes between the architecture's plain graph and kernel creation: fusion (`fusion`: a
//! rewrite into the fused ops a provider offers for the device), then compaction (the values no
//! node reads any more dropped: intermediates a fused op hides, weights read in a dtype no
//! remaining node uses).

use super::error::LoadError;
use super::graph::Graph;
use super::select::Selector;
use rtllm_models::BuildError;

/// Runs every pass over `graph`.
pub fn run(graph: Graph, selector: Selector<'_>) -> Result<Graph, LoadError> {
    let failed = |message: String| LoadError::Build(BuildError::Invalid { scope: "graph passes".into(), message });
    super::fusion::fuse(graph, selector).map_err(failed)
}
