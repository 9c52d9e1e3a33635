//! DISCONNECT: everything earlier is processed, then RECEIPT, then close.

use super::{Flow, Session, SessionError, State};
use crate::router::RouterCommand;
use stomp_protocol::Frame;

impl Session {
    pub(super) async fn on_disconnect(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        self.state = State::Ended;
        // Uncommitted transactions are discarded (STOMP 1.2, DISCONNECT).
        self.transactions.clear();
        // Dropping our queue handle, as the router drops its own after the
        // receipt, lets the writer see the end once the RECEIPT is out.
        self.outbound = None;
        // A queue engine's unsettled deliveries go back before the RECEIPT.
        if let Some(engine) = &self.context.queue_engine {
            engine.detach(self.id).await;
        }
        self.route(RouterCommand::Detach {
            session: self.id,
            receipt: frame.get("receipt").map(str::to_owned),
        })
        .await?;
        Ok(Flow::Disconnect)
    }
}
