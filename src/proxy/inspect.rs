//! Reading a bounded prefix of a response body, for campaign sources that need the body
//! (`json:` and `regex:`). At most `--max-inspect-bytes` are held; a larger body is passed on
//! uncapped with the prefix put back in front of the rest, so nothing is lost.

use super::upstream::ResponseBody;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

/// The result of reading up to the limit.
pub enum Inspected {
    /// The whole body fit.
    Complete(Bytes),
    /// The body is larger than the limit: what was read, and the rest.
    TooLarge(Bytes, ResponseBody),
}

/// Reads `body` until it ends or more than `max` bytes have arrived.
///
/// # Errors
/// The upstream's body failed.
pub async fn read_prefix(mut body: ResponseBody, max: usize) -> Result<Inspected, std::io::Error> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        // Trailers of an inspected body are dropped; ad responses do not use them.
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > max {
                return Ok(Inspected::TooLarge(buf.freeze(), body));
            }
        }
    }
    Ok(Inspected::Complete(buf.freeze()))
}
