//! Entry point for the `dns` fuzz target in `tests/fuzz`: one DNS message through the
//! handler's whole request path, without sockets. Not an API; hidden from the docs.

use std::net::{Ipv4Addr, SocketAddr};

use hickory_proto::op::{Message, MessageType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_proto::xfer::{BufDnsStreamHandle, Protocol};
use hickory_server::authority::MessageRequest;
use hickory_server::server::{Request, RequestHandler, ResponseHandle};

use crate::DnsHandler;

impl DnsHandler {
    /// Answers `msg` as the server does when it arrives over UDP (`udp`) or TCP: decoded by
    /// hickory, answered by [`DnsHandler`], encoded by hickory's own `ResponseHandle` with
    /// the transport's size limit. `None`: not a query, or not decodable (hickory answers
    /// those itself, before the handler).
    ///
    /// Checks what must hold of every answer: it decodes, carries the query's ID, and over
    /// UDP fits the size the client can take.
    pub async fn fuzz_answer(&self, msg: &[u8], udp: bool) -> Option<Vec<u8>> {
        let m = MessageRequest::read(&mut BinDecoder::new(msg)).ok()?;
        if m.message_type() != MessageType::Query {
            return None;
        }
        let id = m.id();
        let max = match m.edns() {
            Some(e) => usize::from(e.max_payload().max(512)),
            None => 512,
        };
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 53000));
        let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
        let request = Request::new(m, peer, protocol);
        let (stream, mut sent) = BufDnsStreamHandle::new(peer);
        self.handle_request(&request, ResponseHandle::new(peer, stream, protocol))
            .await;
        let out = sent.get_mut().get_mut().try_recv().ok()?;
        let bytes = out.bytes().to_vec();
        let answer = Message::from_vec(&bytes)
            .unwrap_or_else(|e| panic!("our answer does not decode: {e}: {bytes:02x?}"));
        assert_eq!(answer.id(), id, "answer ID differs from the query's");
        assert_eq!(answer.message_type(), MessageType::Response);
        if udp {
            assert!(
                bytes.len() <= max,
                "UDP answer of {} bytes to a client taking {max}",
                bytes.len()
            );
        }
        Some(bytes)
    }
}
