//! The sans-IO client side: addresses, request bytes, response decoding in
//! every framing and split anywhere, and the IMGAPI requests and answers.

use alcove_api::Uuid;
use alcove_api::client::imgapi::{self, ImgapiError};
use alcove_api::client::{BufferedResponse, DecodeError, Event, Request, Response, ResponseDecoder, Url, UrlError};
use serde_json::json;

#[test]
fn urls() {
    let u = Url::parse("http://10.0.2.2:8081/imgapi/").unwrap();
    assert_eq!((u.host.as_str(), u.port, u.prefix.as_str()), ("10.0.2.2", 8081, "/imgapi"));
    assert_eq!(u.socket_addr(), "10.0.2.2:8081");
    assert_eq!(u.to_string(), "http://10.0.2.2:8081/imgapi");
    let u = Url::parse("http://images.example").unwrap();
    assert_eq!((u.port, u.authority()), (80, "images.example".to_string()));
    let u = Url::parse("http://[::1]:8080").unwrap();
    assert_eq!((u.socket_addr(), u.authority()), ("::1:8080".to_string(), "[::1]:8080".to_string()));
    assert!(matches!(Url::parse("https://images.smartos.org"), Err(UrlError::Scheme(_))));
    assert!(Url::parse("https://x").unwrap_err().to_string().contains("only http://"));
    assert_eq!(Url::parse("http://"), Err(UrlError::NoHost));
    assert_eq!(Url::parse("http://:80"), Err(UrlError::NoHost));
    assert_eq!(Url::parse("http://x:0"), Err(UrlError::Port("0".into())));
    assert_eq!(Url::parse("http://x:99999"), Err(UrlError::Port("99999".into())));
    assert!(matches!(Url::parse("http://user@x"), Err(UrlError::Unsupported(_))));
    assert!(matches!(Url::parse("http://x/?a=b"), Err(UrlError::Unsupported(_))));
    assert!(matches!(Url::parse("http://x y"), Err(UrlError::Unsupported(_))));
}

#[test]
fn request_bytes() {
    let url = Url::parse("http://h:8080/api").unwrap();
    let r = Request::new("POST", "/vms").bearer("tok").json(&json!({"ram": 512}));
    assert_eq!(
        String::from_utf8(r.encode(&url, true)).unwrap(),
        "POST /api/vms HTTP/1.1\r\nHost: h:8080\r\nAuthorization: Bearer tok\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{\"ram\":512}"
    );
    // A value with a line break could forge a header: it is left out.
    let r = Request::new("GET", "ping").header("X-Evil", "a\r\nAuthorization: Bearer stolen").header("X-Ok", "1");
    assert_eq!(String::from_utf8(r.encode(&url, false)).unwrap(), "GET /api/ping HTTP/1.1\r\nHost: h:8080\r\nX-Ok: 1\r\n\r\n");
}

/// Decodes `bytes` fed in pieces of `chunk`: the head and the body.
fn decode(bytes: &[u8], chunk: usize, eof: bool) -> Result<(u16, Vec<u8>, bool), DecodeError> {
    let mut d = ResponseDecoder::new();
    let (mut status, mut body, mut ended) = (0, Vec::new(), false);
    let mut pieces = bytes.chunks(chunk).peekable();
    loop {
        while let Some(ev) = d.next_event()? {
            match ev {
                Event::Head(h) => status = h.status,
                Event::Data(b) => body.extend(b),
                Event::End => ended = true,
            }
        }
        match pieces.next() {
            Some(p) => d.push(p),
            None if eof && !ended => {
                d.finish();
                while let Some(ev) = d.next_event()? {
                    match ev {
                        Event::Head(h) => status = h.status,
                        Event::Data(b) => body.extend(b),
                        Event::End => ended = true,
                    }
                }
                return Ok((status, body, ended));
            }
            None => return Ok((status, body, ended)),
        }
    }
}

#[test]
fn response_framings_split_anywhere() {
    let cases: &[(&[u8], bool, &[u8])] = &[
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, b"hello"),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}", false, b"{}"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n", false, b"hello world"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", false, b"0123456789"),
        (b"HTTP/1.0 200 OK\r\n\r\nto the end", true, b"to the end"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", false, b""),
    ];
    for (raw, eof, want) in cases {
        for chunk in [1, 2, 5, 1000] {
            let (status, body, ended) = decode(raw, chunk, *eof).unwrap();
            assert!((200..300).contains(&status), "{status}");
            assert_eq!(body, *want, "{:?} in pieces of {chunk}", String::from_utf8_lossy(raw));
            assert!(ended);
        }
    }
}

#[test]
fn bad_responses_are_errors() {
    assert_eq!(decode(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 100, true), Err(DecodeError::Truncated));
    assert_eq!(decode(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", 100, true), Err(DecodeError::Truncated));
    assert_eq!(decode(b"HTTP/1.1 20", 100, true), Err(DecodeError::Truncated));
    assert!(matches!(decode(b"SSH-2.0-OpenSSH\r\n\r\n", 100, false), Err(DecodeError::Malformed(_))));
    assert!(matches!(decode(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 100, false), Err(DecodeError::Malformed(_))));
    assert!(matches!(decode(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", 100, false), Err(DecodeError::Malformed(_))));
    assert!(matches!(decode(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 100, false), Err(DecodeError::Malformed(_))));
    let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(70_000));
    assert_eq!(decode(huge.as_bytes(), 100_000, false), Err(DecodeError::HeadTooLarge(65536)));
    let mut b = BufferedResponse::new(4);
    b.push(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(b.poll(), Err(DecodeError::BodyTooLarge(4)));
}

fn response(status: u16, body: &str) -> Response {
    let mut b = BufferedResponse::new(1 << 20);
    b.push(format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
    b.poll().unwrap().unwrap()
}

#[test]
fn imgapi_requests_and_answers() {
    let src = Url::parse("http://10.0.2.2:8081").unwrap();
    let uuid = Uuid::parse("01b2c898-945f-11e1-a523-af1afbe22822").unwrap();
    let list = String::from_utf8(imgapi::list_images(&[("os", "linux"), ("name", "debian 12")]).encode(&src, true)).unwrap();
    assert!(list.starts_with("GET /images?os=linux&name=debian%2012 HTTP/1.1\r\nHost: 10.0.2.2:8081\r\nAccept: application/json\r\n"), "{list}");
    let get = String::from_utf8(imgapi::get_image(uuid).encode(&src, true)).unwrap();
    assert!(get.starts_with("GET /images/01b2c898-945f-11e1-a523-af1afbe22822 HTTP/1.1\r\n"));
    let file = String::from_utf8(imgapi::get_image_file(uuid).encode(&src, true)).unwrap();
    assert!(file.starts_with("GET /images/01b2c898-945f-11e1-a523-af1afbe22822/file HTTP/1.1\r\n"));
    assert!(String::from_utf8(imgapi::ping().encode(&src, true)).unwrap().starts_with("GET /ping "));

    let ms = imgapi::manifests(&response(200, r#"[{"uuid":"a"},{"uuid":"b"}]"#)).unwrap();
    assert_eq!(ms.len(), 2);
    assert_eq!(imgapi::manifest(&response(200, r#"{"uuid":"a","files":[{"sha1":"x","size":1}]}"#)).unwrap()["files"][0]["size"], 1);
    assert_eq!(imgapi::manifests(&response(200, r#"[1]"#)), Err(ImgapiError::Shape("an array of manifest objects")));
    assert_eq!(imgapi::manifests(&response(200, r#"{}"#)), Err(ImgapiError::Shape("an array of manifests")));
    assert_eq!(imgapi::manifest(&response(200, r#"[]"#)), Err(ImgapiError::Shape("a manifest object")));
    assert!(matches!(imgapi::manifest(&response(200, "<html>")), Err(ImgapiError::NotJson(_))));
    let e = imgapi::manifest(&response(404, r#"{"code":"ResourceNotFound","message":"image 01b2 not found"}"#)).unwrap_err();
    assert_eq!(e.to_string(), "the image source answered 404 ResourceNotFound: image 01b2 not found");
    let e = imgapi::manifest(&response(502, "Bad Gateway")).unwrap_err();
    assert_eq!(e.to_string(), "the image source answered 502: Bad Gateway");
}

#[test]
fn garbage_never_panics_the_decoder() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let pieces: [&[u8]; 8] = [
        b"HTTP/1.1 200 OK\r\n", b"Transfer-Encoding: chunked\r\n", b"Content-Length: 3\r\n", b"\r\n", b"5\r\n", b"ffffffffffffffffff\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n", b"abc",
    ];
    for _ in 0..3000 {
        let mut bytes = Vec::new();
        for _ in 0..(rnd() % 12) {
            if rnd() % 4 == 0 {
                bytes.extend((0..rnd() % 8).map(|_| rnd() as u8));
            } else {
                bytes.extend_from_slice(pieces[(rnd() % pieces.len() as u64) as usize]);
            }
        }
        let mut b = BufferedResponse::new(1 << 16);
        for piece in bytes.chunks((rnd() % 9 + 1) as usize) {
            b.push(piece);
            if b.poll().is_err() {
                break;
            }
        }
        b.finish();
        let _ = b.poll();
    }
}
