//! BEGIN, COMMIT and ABORT: refused plainly until transactions are built
//! together with queue acknowledgements.

use super::send::transactions_unsupported;
use super::{required, Flow, Session, SessionError};
use stomp_protocol::Frame;

impl Session {
    pub(super) fn on_transaction(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        required(frame, "transaction")?;
        Err(transactions_unsupported())
    }
}
