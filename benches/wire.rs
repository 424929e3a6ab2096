//! The upstream answer's head, parsed as the proxy parses every answer: the banner the load
//! comparison's stand-in ad server sends, with the campaign and retargeting fields set aside.
//! `cargo bench --bench wire`.

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use http::header::HeaderName;
use kappe::proxy::upstream::wire;

const ANSWER: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 02:42:15 GMT\r\n\
Content-Type: text/html\r\nContent-Length: 117\r\nConnection: keep-alive\r\n\
X-Campaign-Id: rt-shoes\r\nX-Retargeting: 1\r\n\r\n";

fn answer_head(c: &mut Criterion) {
    let fields = wire::KnownFields::new(
        vec![
            HeaderName::from_static("x-retargeting"),
            HeaderName::from_static("x-kappe-burn"),
            HeaderName::from_static("x-campaign-id"),
        ],
        true,
    );
    let mut buf = BytesMut::with_capacity(4096);
    c.bench_function("wire/parse the banner's answer head", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(ANSWER);
            let head = wire::parse_head(&mut buf, false, &fields)
                .expect("a valid head")
                .expect("a complete head");
            wire::recycle(head.headers);
        });
    });
}

criterion_group!(benches, answer_head);
criterion_main!(benches);
