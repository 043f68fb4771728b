//! The gateway agents' `/status` over HTTP, as the operator reads it from each replica.

use crate::agent::StatusReport;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::time::Duration;

/// Most bytes of a `/status` answer read: a replica draining thousands of domains stays
/// well below it.
const MAX_STATUS_BYTES: usize = 4 << 20;

/// Plain HTTP to the agents' port (inside the cluster, as the kubelet's probes).
pub struct Http {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl Http {
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    async fn status(&self, address: SocketAddr, token: &str) -> Result<StatusReport, String> {
        let request = hyper::Request::get(format!("http://{address}/status"))
            .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Empty::new())
            .map_err(|e| format!("{address}: {e}"))?;
        let read = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("answered {}", response.status()));
            }
            let body = http_body_util::Limited::new(response.into_body(), MAX_STATUS_BYTES)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|e| format!("unreadable answer: {e}"))
        };
        tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
    }
}

impl super::AgentStatus for Http {
    fn status<'a>(
        &'a self,
        address: SocketAddr,
        token: &'a str,
    ) -> BoxFuture<'a, Result<StatusReport, String>> {
        Box::pin(Http::status(self, address, token))
    }
}
