//! The fetch tier against a loopback server that misbehaves on purpose: every case ends in
//! one failure class with a reason (or a correct image), and nothing crashes or hangs.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use facesweep_imagefetch::decode::{Shape, Wire};
use facesweep_imagefetch::download::DownloadConfig;
use facesweep_imagefetch::fetch::{FetchConfig, Fetcher};
use facesweep_imagefetch::net::IpPolicy;
use facesweep_proto::UrlStatus;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};

#[derive(Default)]
struct State {
    hits: Mutex<HashMap<String, usize>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

type Body = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let mut img = image::RgbImage::from_pixel(w, h, image::Rgb([255, 0, 0]));
    for y in 0..h {
        for x in w / 2..w {
            img.put_pixel(x, y, image::Rgb([0, 0, 255]));
        }
    }
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Jpeg)
        .unwrap();
    out
}

/// A ~1.5 MB JPEG of noise (larger than the first reservation of a body without a length).
fn big_jpeg() -> Bytes {
    static BIG: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    BIG.get_or_init(|| {
        let mut seed = 0x2545_F491u32;
        let img = image::RgbImage::from_fn(1100, 1100, |_, _| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            image::Rgb([seed as u8, (seed >> 8) as u8, (seed >> 16) as u8])
        });
        let mut out = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Jpeg)
            .unwrap();
        assert!(out.len() > 1_200_000, "noise JPEG only {} bytes", out.len());
        Bytes::from(out)
    })
    .clone()
}

/// A PNG whose header claims 20000x20000 pixels (decompression bomb); no pixel data needed.
fn png_bomb() -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(20000u32.to_be_bytes());
    ihdr.extend(20000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    for (kind, data) in [(&b"IDAT"[..], &[0x78u8, 0x9C, 0x03, 0x00][..]), (&b"IEND"[..], &[][..])] {
        let mut chunk = kind.to_vec();
        chunk.extend(data);
        png.extend((data.len() as u32).to_be_bytes());
        png.extend(&chunk);
        png.extend(crc32(&chunk).to_be_bytes());
    }
    png
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// JPEG with an EXIF APP1 orientation tag inserted after SOI.
fn with_orientation(jpeg: &[u8], o: u16) -> Vec<u8> {
    let mut tiff = b"II".to_vec();
    tiff.extend(42u16.to_le_bytes());
    tiff.extend(8u32.to_le_bytes());
    tiff.extend(1u16.to_le_bytes());
    tiff.extend([0x12, 0x01, 3, 0]);
    tiff.extend(1u32.to_le_bytes());
    tiff.extend(o.to_le_bytes());
    tiff.extend([0, 0, 0, 0, 0, 0]);
    let mut seg = b"Exif\0\0".to_vec();
    seg.extend(tiff);
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend(((seg.len() + 2) as u16).to_be_bytes());
    out.extend(seg);
    out.extend(&jpeg[2..]);
    out
}

async fn handle(
    state: Arc<State>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let n = {
        let mut hits = state.hits.lock().unwrap();
        let e = hits.entry(path.clone()).or_default();
        *e += 1;
        *e
    };
    let fixture =
        |name: &str| std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let resp = |status: u16, body: Body| Response::builder().status(status).body(body).unwrap();
    Ok(match path.as_str() {
        "/ok.jpg" => resp(200, full(jpeg(64, 32))),
        "/huge-declared" => resp(200, full(vec![0u8; 3 << 20])),
        "/endless" => {
            let chunks = futures::stream::repeat_with(|| {
                Ok::<_, Infallible>(Frame::data(Bytes::from(vec![0xFFu8; 64 << 10])))
            });
            resp(200, BodyExt::boxed(StreamBody::new(chunks)))
        }
        // Transfer-Encoding: chunked (no Content-Length), paced so that many are mid-body at once.
        "/chunked-big.jpg" => {
            let body = big_jpeg();
            let frames = futures::stream::unfold(0usize, move |at| {
                let body = body.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    let end = (at + (64 << 10)).min(body.len());
                    (at < body.len()).then(|| (Ok::<_, Infallible>(Frame::data(body.slice(at..end))), end))
                }
            });
            resp(200, BodyExt::boxed(StreamBody::new(frames)))
        }
        "/drip" => {
            let drip = futures::stream::unfold(0, |i| async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                (i < 100).then(|| (Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"x"))), i + 1))
            });
            resp(200, BodyExt::boxed(StreamBody::new(drip)))
        }
        "/silent" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            resp(200, full("late"))
        }
        "/loop1" => Response::builder().status(302).header("location", "/loop2").body(full("")).unwrap(),
        "/loop2" => Response::builder().status(302).header("location", "/loop1").body(full("")).unwrap(),
        "/to-other-loopback" => {
            let port = req
                .uri()
                .port_u16()
                .or_else(|| {
                    req.headers().get("host").and_then(|h| h.to_str().ok()?.rsplit(':').next()?.parse().ok())
                })
                .unwrap_or(80);
            Response::builder()
                .status(302)
                .header("location", format!("http://127.0.0.2:{port}/ok.jpg"))
                .body(full(""))
                .unwrap()
        }
        "/busy-then-ok" if n == 1 => {
            Response::builder().status(429).header("retry-after", "1").body(full("slow down")).unwrap()
        }
        "/busy-then-ok" => resp(200, full(jpeg(64, 32))),
        "/always-503" => resp(503, full("down")),
        "/long-retry-after" => {
            Response::builder().status(503).header("retry-after", "3600").body(full("")).unwrap()
        }
        "/missing" => resp(404, full("no")),
        "/bomb.png" => resp(200, full(png_bomb())),
        "/rotated.jpg" => resp(200, full(with_orientation(&jpeg(64, 32), 6))),
        "/cmyk.jpg" => resp(200, full(fixture("cmyk.jpg"))),
        "/anim.gif" => resp(200, full(fixture("anim.gif"))),
        "/many-scans.jpg" => resp(200, full(fixture("many_scans.jpg"))),
        "/anim.webp" => resp(200, full(fixture("anim.webp"))),
        "/slow-ok" => {
            let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            state.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(150)).await;
            state.in_flight.fetch_sub(1, Ordering::SeqCst);
            resp(200, full(jpeg(16, 16)))
        }
        _ => resp(404, full("unknown")),
    })
}

async fn server() -> (SocketAddr, Arc<State>) {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], listener.local_addr().unwrap().port()));
    let state = Arc::new(State::default());
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let st = st.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, state)
}

fn config(allow: &[&str]) -> FetchConfig {
    FetchConfig {
        download: DownloadConfig {
            connect_timeout: Duration::from_secs(2),
            first_byte_timeout: Duration::from_millis(800),
            total_timeout: Duration::from_millis(1500),
            max_body_bytes: 1 << 20,
            max_redirects: 4,
            user_agent: "facesweep-test".into(),
            retries: 2,
            retry_base: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(5),
            policy: IpPolicy { allow: allow.iter().map(|a| a.parse().unwrap()).collect() },
            proxy: None,
        },
        max_pixels: 50_000_000,
        decode_threads: 2,
        per_host: 2,
        body_budget_bytes: 8 << 20,
        decode_timeout: Duration::from_secs(10),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_misbehaviour_gets_its_class_and_a_reason() {
    let (addr, state) = server().await;
    let f = Fetcher::new(config(&["127.0.0.1/32"]), Arc::new(())).unwrap();
    let url = |p: &str| format!("http://{addr}{p}");
    let cases: Vec<(String, UrlStatus, &str)> = vec![
        (url("/huge-declared"), UrlStatus::TooLarge, "cap"),
        (url("/endless"), UrlStatus::TooLarge, "cap"),
        (url("/drip"), UrlStatus::Timeout, "timed out"),
        (url("/silent"), UrlStatus::Timeout, "no response"),
        (url("/loop1"), UrlStatus::HttpError, "redirect"),
        (url("/always-503"), UrlStatus::HttpError, "503"),
        (url("/long-retry-after"), UrlStatus::HttpError, "Retry-After 3600"),
        (url("/missing"), UrlStatus::HttpError, "404"),
        (url("/bomb.png"), UrlStatus::TooLarge, "20000x20000"),
        (url("/many-scans.jpg"), UrlStatus::DecodeError, "scans"),
        (url("/to-other-loopback"), UrlStatus::Blocked, "127.0.0.2"),
        ("gopher://example.com/x".into(), UrlStatus::InvalidUrl, "scheme"),
        ("http://".into(), UrlStatus::InvalidUrl, "invalid URL"),
        ("not a url at all".into(), UrlStatus::InvalidUrl, "invalid URL"),
    ];
    let results =
        futures::future::join_all(cases.iter().map(|(u, _, _)| f.fetch(u, Shape::canvas(64, 64)))).await;
    for ((u, want, why), (r, _)) in cases.iter().zip(results) {
        let e = r.expect_err(u);
        assert_eq!(e.status, *want, "{u}: {}", e.reason);
        assert!(e.reason.contains(why), "{u}: reason {:?} should mention {why:?}", e.reason);
        if u.ends_with("many-scans.jpg") {
            // The server answered 200; the URL's record says so even though decoding failed.
            assert_eq!(e.http_status, 200, "{u}");
        }
    }
    let hits = state.hits.lock().unwrap().clone();
    assert_eq!(hits["/always-503"], 3, "transient failures get 1 + retries attempts");
    assert_eq!(hits["/long-retry-after"], 1, "a Retry-After beyond the limit is not waited for");
    assert_eq!(hits["/missing"], 1, "a 404 is not retried");
    assert!(!hits.contains_key("/ok.jpg"), "the blocked redirect must not be followed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_bodies_without_a_length_never_wait_on_each_other() {
    // 8 MiB of budget, 1 MiB first reservations, bodies of ~1.5 MB: eight downloads hold the
    // whole budget and all need to grow. With hold-and-wait they waited forever.
    let (addr, _) = server().await;
    let mut cfg = config(&["127.0.0.1/32"]);
    cfg.download.max_body_bytes = 4 << 20;
    cfg.download.total_timeout = Duration::from_secs(20);
    cfg.per_host = 64;
    let f = Fetcher::new(cfg, Arc::new(())).unwrap();
    let url = format!("http://{addr}/chunked-big.jpg");
    let all = futures::future::join_all((0..24).map(|_| f.fetch(&url, Shape::canvas(64, 64))));
    let results =
        tokio::time::timeout(Duration::from_secs(60), all).await.expect("downloads stuck on the budget");
    for (r, st) in results {
        assert!(r.is_ok(), "{r:?}");
        assert!(st.bytes > 1_200_000, "{} bytes", st.bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_after_is_honoured_and_per_host_limit_holds() {
    let (addr, state) = server().await;
    let f = Fetcher::new(config(&["127.0.0.1/32"]), Arc::new(())).unwrap();
    let started = std::time::Instant::now();
    let (r, st) = f.fetch(&format!("http://{addr}/busy-then-ok"), Shape::canvas(64, 64)).await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(st.http_status, 200);
    assert!(started.elapsed() >= Duration::from_millis(950), "Retry-After: 1 was not waited for");
    let slow = format!("http://{addr}/slow-ok");
    let fs = futures::future::join_all((0..10).map(|_| f.fetch(&slow, Shape::canvas(16, 16)))).await;
    assert!(fs.iter().all(|(r, _)| r.is_ok()));
    let max = state.max_in_flight.load(Ordering::SeqCst);
    assert!((1..=2).contains(&max), "per-host limit 2 exceeded: {max}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_by_default() {
    let (addr, state) = server().await;
    let f = Fetcher::new(config(&[]), Arc::new(())).unwrap();
    for u in [
        format!("http://{addr}/ok.jpg"),
        format!("http://localhost:{}/ok.jpg", addr.port()),
        "http://169.254.169.254/latest/meta-data/".into(),
    ] {
        let (r, _) = f.fetch(&u, Shape::canvas(64, 64)).await;
        let e = r.expect_err(&u);
        assert_eq!(e.status, UrlStatus::Blocked, "{u}: {}", e.reason);
    }
    assert!(state.hits.lock().unwrap().is_empty(), "a refused URL must not be requested");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_images_decode_correctly() {
    let (addr, _) = server().await;
    let f = Fetcher::new(config(&["127.0.0.1/32"]), Arc::new(())).unwrap();
    let px = |lb: &facesweep_imagefetch::decode::Letterboxed, x: u32, y: u32| {
        let i = ((y * lb.width + x) * 3) as usize;
        [lb.data[i], lb.data[i + 1], lb.data[i + 2]]
    };
    let red = |c: [u8; 3]| c[0] > 180 && c[1] < 80 && c[2] < 80;
    let blue = |c: [u8; 3]| c[2] > 180 && c[0] < 80 && c[1] < 80;
    // 64x32, red left / blue right, EXIF 6 (rotate 90 CW): upright 32x64, red on top.
    let (r, _) = f.fetch(&format!("http://{addr}/rotated.jpg"), Shape::canvas(64, 64)).await;
    let lb = r.unwrap();
    assert_eq!((lb.original_width, lb.original_height), (32, 64));
    assert!(red(px(&lb, 32, 10)) && blue(px(&lb, 32, 54)), "{:?} {:?}", px(&lb, 32, 10), px(&lb, 32, 54));
    // The same on the compact wire: only the 32x64 content, as YUV 4:2:0, placed at x = 16.
    let compact = Shape { wire: Wire::I420, ..Shape::canvas(64, 64) };
    let (r, _) = f.fetch(&format!("http://{addr}/rotated.jpg"), compact).await;
    let lb = r.unwrap();
    assert_eq!(
        (lb.width, lb.height, lb.canvas, lb.offset_x, lb.offset_y),
        (32, 64, Some((64, 64)), 16.0, 0.0)
    );
    assert_eq!(lb.data.len(), 32 * 64 + 2 * 16 * 32);
    let (u, v) = (
        |x: usize, y: usize| lb.data[2048 + y * 16 + x],
        |x: usize, y: usize| lb.data[2048 + 512 + y * 16 + x],
    );
    assert!(v(8, 5) > 200 && u(8, 5) < 128, "top must be red: u {} v {}", u(8, 5), v(8, 5));
    assert!(u(8, 27) > 200 && v(8, 27) < 128, "bottom must be blue: u {} v {}", u(8, 27), v(8, 27));
    let (r, _) = f.fetch(&format!("http://{addr}/cmyk.jpg"), Shape::canvas(32, 32)).await;
    let lb = r.unwrap();
    assert!(red(px(&lb, 4, 16)) && blue(px(&lb, 28, 16)), "CMYK: {:?} {:?}", px(&lb, 4, 16), px(&lb, 28, 16));
    for anim in ["/anim.gif", "/anim.webp"] {
        let (r, _) = f.fetch(&format!("http://{addr}{anim}"), Shape::canvas(16, 16)).await;
        let lb = r.unwrap();
        assert!(red(px(&lb, 8, 8)), "{anim}: first frame should be red, got {:?}", px(&lb, 8, 8));
    }
}
