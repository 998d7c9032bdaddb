//! The `Admin.Status` gRPC service (`Discovery.Stream` is [`crate::stream`]).

use std::sync::Arc;

use bulwark_api::wire;
use bulwark_api::wire::admin_server::Admin;
use tonic::{Request, Response, Status};

use crate::state::State;

/// Serves the status from the shared state.
#[derive(Debug, Clone)]
pub struct Service {
    state: Arc<State>,
}

impl Service {
    /// Services over `state`.
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Admin for Service {
    async fn status(
        &self,
        _: Request<wire::StatusRequest>,
    ) -> Result<Response<wire::StatusResponse>, Status> {
        Ok(Response::new(self.state.status()))
    }
}
