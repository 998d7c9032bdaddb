//! The engine against a scripted upstream, on tokio's paused clock: no sockets, no root,
//! and every time asserted exactly.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use tokio::time::Instant;

use super::*;
use crate::error::{Error, Kind, Side};
use crate::http::body::AttemptBody;
use crate::metrics::{Metrics, Resilience};
use crate::outbound::call::{Call, Upstream};
use crate::outbound::target::TargetState;
use crate::outbound::test_util::backend_state_with;

/// What the scripted upstream does with one attempt.
#[derive(Debug, Clone)]
enum Step {
    /// Answers with this status at once.
    Status(u16),
    /// Answers with this status and `Retry-After: secs`.
    RetryAfter(u16, u64),
    /// Fails as a transport would.
    Fail(Kind),
    /// Waits, then does the next step.
    After(Duration, Box<Step>),
    /// Reads the whole body first (a failed body is the client's fault, as the pools say).
    ReadBody(Box<Step>),
    /// Does the next step at once while it goes on reading the body after a delay, as a
    /// pooled connection that answered early keeps sending the request.
    ReadLater(Duration, Box<Step>),
}

fn after(ms: u64, then: Step) -> Step {
    Step::After(Duration::from_millis(ms), Box::new(then))
}

/// An upstream that plays its steps in call order (200 once they run out) and records
/// where and when each attempt went.
#[derive(Debug)]
struct Script {
    steps: Mutex<VecDeque<Step>>,
    sent: Mutex<Vec<(SocketAddr, Duration)>>,
    /// Bytes of each body a `ReadBody` step read whole.
    read: Arc<Mutex<Vec<usize>>>,
    t0: Instant,
}

impl Script {
    fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        Self {
            steps: Mutex::new(steps.into_iter().collect()),
            sent: Mutex::new(Vec::new()),
            read: Arc::default(),
            t0: Instant::now(),
        }
    }

    fn sent(&self) -> Vec<(SocketAddr, Duration)> {
        self.sent.lock().unwrap().clone()
    }
}

impl Upstream<TestBody> for Script {
    type Body = ();

    async fn send(
        &self,
        addr: SocketAddr,
        _connect_timeout: Duration,
        req: Request<AttemptBody<TestBody>>,
    ) -> Result<Response<()>, Error> {
        self.sent.lock().unwrap().push((addr, self.t0.elapsed()));
        let step = self
            .steps
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Step::Status(200));
        play(step, req.into_body(), &self.read).await
    }
}

async fn play(
    mut step: Step,
    body: AttemptBody<TestBody>,
    read: &Mutex<Vec<usize>>,
) -> Result<Response<()>, Error> {
    let mut body = Some(body);
    loop {
        step = match step {
            Step::Status(s) => return Ok(Response::builder().status(s).body(()).unwrap()),
            Step::RetryAfter(s, secs) => {
                return Ok(Response::builder()
                    .status(s)
                    .header("retry-after", secs.to_string())
                    .body(())
                    .unwrap());
            }
            Step::Fail(k) => return Err(k.into()),
            Step::After(d, next) => {
                tokio::time::sleep(d).await;
                *next
            }
            Step::ReadBody(next) => {
                if let Some(b) = body.take() {
                    match b.collect().await {
                        Ok(all) => read.lock().unwrap().push(all.to_bytes().len()),
                        Err(_) => return Err(Kind::DownstreamAborted.into()),
                    }
                }
                *next
            }
            Step::ReadLater(d, next) => {
                if let Some(b) = body.take() {
                    tokio::spawn(async move {
                        tokio::time::sleep(d).await;
                        let _ = b.collect().await;
                    });
                }
                *next
            }
        }
    }
}

/// A client body of chunks given up front; an `Err` is the client aborting.
#[derive(Debug, Default)]
struct TestBody(VecDeque<Result<Bytes, std::io::Error>>);

impl TestBody {
    fn chunks(n: usize, size: usize) -> Self {
        Self((0..n).map(|_| Ok(Bytes::from(vec![b'x'; size]))).collect())
    }

    fn aborted_after(size: usize) -> Self {
        Self(
            [
                Ok(Bytes::from(vec![b'x'; size])),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "client went away",
                )),
            ]
            .into(),
        )
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(self.0.pop_front().map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// A Backend with `endpoints` endpoints under the TrafficPolicy `spec`, and its counters.
struct Fixture {
    state: Arc<TargetState>,
    metrics: Arc<Metrics>,
}

impl Fixture {
    fn new(endpoints: usize, spec: &str) -> Self {
        let metrics = Arc::new(Metrics::new(8));
        let state = backend_state_with(endpoints, spec, metrics.clone());
        Self { state, metrics }
    }

    async fn call(
        &self,
        script: &Script,
        method: Method,
        body: TestBody,
    ) -> Result<Reply<()>, Error> {
        let target = self.state.target.load_full();
        let policy = target
            .request_policy(&method, "/items", &http::HeaderMap::new())
            .clone();
        let c = Call {
            upstream: script,
            metrics: &self.metrics,
            dst: "10.9.9.9:80".parse().unwrap(),
            target: &target,
            state: &self.state,
            policy: &policy,
            grpc: false,
            start: Instant::now(),
            upgrade: false,
        };
        let req = Request::builder()
            .method(method)
            .uri("http://api/items")
            .body(body)
            .unwrap();
        run(&c, req).await
    }

    fn counted(&self, counter: Resilience, reason: &'static str) -> u64 {
        self.metrics.counted(counter, "Backend/shop/api", reason)
    }
}

fn status(r: &Result<Reply<()>, Error>) -> u16 {
    match r {
        Ok(r) => r.resp.status().as_u16(),
        Err(e) => panic!("expected a response, got {e:?}"),
    }
}

const RETRY_ALL: &str =
    "retries: {attempts: 3, conditions: [connect-failure, refused-stream, reset, 5xx]}";

#[tokio::test(start_paused = true)]
async fn each_retryable_failure_is_retried_on_another_endpoint() {
    let cases = [
        (Step::Fail(Kind::ConnectRefused), "connect_failure"),
        (Step::Fail(Kind::ConnectTimeout), "connect_failure"),
        (Step::Fail(Kind::RefusedStream), "refused_stream"),
        (Step::Fail(Kind::UpstreamReset), "reset"),
        (Step::Status(503), "status"),
    ];
    for (failure, label) in cases {
        let f = Fixture::new(2, RETRY_ALL);
        let script = Script::new([failure.clone()]);
        let r = f.call(&script, Method::GET, TestBody::default()).await;
        assert_eq!(status(&r), 200, "{failure:?}");
        let sent = script.sent();
        assert_eq!(sent.len(), 2, "{failure:?}");
        assert_ne!(
            sent[0].0, sent[1].0,
            "the retry avoids the endpoint that failed"
        );
        assert_eq!(f.counted(Resilience::Retries, label), 1, "{failure:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_per_try_timeout_is_retried() {
    let f = Fixture::new(2, &format!("{RETRY_ALL}\ntimeouts: {{perTry: 100ms}}"));
    let script = Script::new([after(1_000, Step::Status(200))]);
    let r = f.call(&script, Method::GET, TestBody::default()).await;
    assert_eq!(status(&r), 200);
    let sent = script.sent();
    assert_eq!(sent.len(), 2);
    assert!(sent[1].1 >= Duration::from_millis(100), "{sent:?}");
    assert_eq!(f.counted(Resilience::Retries, "per_try_timeout"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_post_is_retried_only_when_it_never_reached_the_app() {
    let f = Fixture::new(2, RETRY_ALL);
    let script = Script::new([Step::Fail(Kind::ConnectRefused)]);
    let r = f.call(&script, Method::POST, TestBody::default()).await;
    assert_eq!(status(&r), 200, "a refused connect sent nothing");
    for failure in [Step::Fail(Kind::UpstreamReset), Step::Status(503)] {
        let script = Script::new([failure.clone()]);
        let r = f.call(&script, Method::POST, TestBody::default()).await;
        assert_eq!(script.sent().len(), 1, "{failure:?} may have run the POST");
        assert!(r.is_err() || status(&r) == 503, "{failure:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_ends_with_the_failure() {
    let f = Fixture::new(
        2,
        "retries: {attempts: 3, conditions: [5xx], budget: {ratio: 0.1, minPerSecond: 0}}",
    );
    let script = Script::new([Step::Status(503)]);
    let r = f.call(&script, Method::GET, TestBody::default()).await;
    assert_eq!(status(&r), 503, "0.1 × one request allows no retry");
    assert_eq!(script.sent().len(), 1);
    assert_eq!(f.counted(Resilience::RetryBudgetExhausted, "status"), 1);
    assert_eq!(f.counted(Resilience::Retries, "status"), 0);
}

#[tokio::test(start_paused = true)]
async fn backoff_stays_within_its_jittered_bounds() {
    let f = Fixture::new(
        3,
        "retries: {attempts: 3, conditions: [5xx], backoff: {base: 100ms, max: 150ms}}",
    );
    for _ in 0..20 {
        let script = Script::new([Step::Status(503), Step::Status(503)]);
        let r = f.call(&script, Method::GET, TestBody::default()).await;
        assert_eq!(status(&r), 200);
        let t: Vec<Duration> = script.sent().iter().map(|s| s.1).collect();
        assert_eq!(t.len(), 3);
        // Tokio's timers fire on whole milliseconds, so a wait just under a bound ends on it.
        assert!(t[1] - t[0] <= Duration::from_millis(100), "{t:?}");
        assert!(
            t[2] - t[1] <= Duration::from_millis(150),
            "capped at max: {t:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_up_to_its_cap() {
    let f = Fixture::new(2, "retries: {attempts: 2, conditions: [5xx]}");
    let script = Script::new([Step::RetryAfter(503, 1)]);
    let r = f.call(&script, Method::GET, TestBody::default()).await;
    assert_eq!(status(&r), 200);
    let sent = script.sent();
    assert!(
        sent[1].1 >= Duration::from_secs(1) && sent[1].1 <= Duration::from_millis(1_250),
        "waited Retry-After, plus at most the backoff: {sent:?}"
    );
    let script = Script::new([Step::RetryAfter(503, 5)]);
    let r = f.call(&script, Method::GET, TestBody::default()).await;
    assert_eq!(
        status(&r),
        503,
        "longer than the cap: the response is returned"
    );
    assert_eq!(script.sent().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_caps_retries() {
    let f = Fixture::new(
        2,
        "retries: {attempts: 3, conditions: [5xx]}\ntimeouts: {request: 300ms}",
    );
    // The wait Retry-After asks for ends past the deadline: no retry, the answer stands.
    let script = Script::new([after(100, Step::RetryAfter(503, 1))]);
    let r = f.call(&script, Method::GET, TestBody::default()).await;
    assert_eq!(status(&r), 503);
    assert_eq!(script.sent().len(), 1);
    // Attempts that time out one by one end at the request's deadline, named after it.
    let f = Fixture::new(
        2,
        "retries: {attempts: 5, conditions: [5xx], backoff: {base: 1ms, max: 1ms}}\ntimeouts: {request: 250ms, perTry: 100ms}",
    );
    let slow = || after(1_000, Step::Status(200));
    let script = Script::new([slow(), slow(), slow(), slow()]);
    let t0 = Instant::now();
    let r = f.call(&script, Method::GET, TestBody::default()).await;
    assert_eq!(r.err().map(|e| e.kind), Some(Kind::RequestTimeout));
    assert_eq!(t0.elapsed(), Duration::from_millis(250));
    assert_eq!(
        script.sent().len(),
        3,
        "at 0, ~100 and ~200 ms; the third is cut at 250"
    );
}

const HEDGED: &str =
    "routes:\n  - match: {pathPrefix: /items}\n    hedging: {delay: 50ms, budgetRatio: 1}";

#[tokio::test(start_paused = true)]
async fn a_hedge_wins_over_a_slow_original() {
    let f = Fixture::new(2, HEDGED);
    let script = Script::new([
        after(1_000, Step::Status(200)),
        after(10, Step::Status(200)),
    ]);
    let t0 = Instant::now();
    let r = f.call(&script, Method::GET, TestBody::default()).await;
    assert_eq!(status(&r), 200);
    assert_eq!(
        t0.elapsed(),
        Duration::from_millis(60),
        "hedge after 50 ms, 10 ms to answer"
    );
    let sent = script.sent();
    assert_eq!(sent.len(), 2);
    assert_ne!(sent[0].0, sent[1].0, "the hedge goes to the other endpoint");
    assert_eq!(f.counted(Resilience::Hedges, "sent"), 1);
    assert_eq!(f.counted(Resilience::Hedges, "hedge_won"), 1);
}

#[tokio::test(start_paused = true)]
async fn an_original_that_answers_first_wins() {
    let f = Fixture::new(2, HEDGED);
    let script = Script::new([
        after(70, Step::Status(200)),
        after(1_000, Step::Status(200)),
    ]);
    let t0 = Instant::now();
    let r = f.call(&script, Method::GET, TestBody::default()).await;
    assert_eq!(status(&r), 200);
    assert_eq!(t0.elapsed(), Duration::from_millis(70));
    assert_eq!(f.counted(Resilience::Hedges, "original_won"), 1);
    // A quick original sends no hedge at all.
    let script = Script::new([after(10, Step::Status(200))]);
    f.call(&script, Method::GET, TestBody::default()).await.ok();
    assert_eq!(script.sent().len(), 1);
    assert_eq!(f.counted(Resilience::Hedges, "sent"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_takes_the_body_over_from_an_attempt_that_is_still_sending() {
    let f = Fixture::new(
        2,
        "retries: {attempts: 3, conditions: [5xx], maxBufferedBodyBytes: 16}",
    );
    // The first attempt answers 503 at once while its connection goes on reading the body
    // during the backoff. Had it read on, the copy would have outgrown its limit (30 bytes
    // against 16) and the retry could not be sent; once the retry is decided, it cannot.
    let script = Script::new([
        Step::ReadLater(
            Duration::from_millis(10),
            Box::new(Step::RetryAfter(503, 1)),
        ),
        Step::ReadBody(Box::new(Step::Status(200))),
    ]);
    let r = f.call(&script, Method::GET, TestBody::chunks(3, 10)).await;
    assert_eq!(status(&r), 200);
    assert_eq!(script.sent().len(), 2);
    assert_eq!(
        *script.read.lock().unwrap(),
        [30],
        "the retry sent the whole body, none of it lost to the first attempt"
    );
    assert_eq!(
        f.counted(Resilience::RetriesSkipped, "body_not_replayable"),
        0
    );
    // A body already past the limit when the attempt fails is not retried: its answer
    // stands.
    let script = Script::new([Step::ReadBody(Box::new(Step::Status(503)))]);
    let r = f.call(&script, Method::GET, TestBody::chunks(3, 10)).await;
    assert_eq!(status(&r), 503);
    assert_eq!(script.sent().len(), 1);
    assert_eq!(
        f.counted(Resilience::RetriesSkipped, "body_not_replayable"),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_aborts_its_upload_does_not_count_against_the_endpoint() {
    let f = Fixture::new(
        1,
        &format!(
            "{RETRY_ALL}\noutlierDetection: {{consecutiveGatewayErrors: 1, maxEjectionPercent: 100}}"
        ),
    );
    for _ in 0..5 {
        let script = Script::new([Step::ReadBody(Box::new(Step::Status(200)))]);
        let r = f
            .call(&script, Method::PUT, TestBody::aborted_after(8))
            .await;
        let e = r.expect_err("the client's body failed");
        assert_eq!(
            (e.kind, e.side),
            (Kind::DownstreamAborted, Side::Downstream)
        );
        assert_eq!(script.sent().len(), 1, "a client's failure is not retried");
    }
    let ep = f.state.endpoints()[0].clone();
    let s = ep.lock();
    assert!(
        !s.outlier.is_ejected(),
        "one gateway error would have ejected it"
    );
    assert_eq!(s.outlier.volume(), 0);
    assert!(
        s.ewma.estimate_ns() < attempt::FAILURE_PENALTY.as_nanos() as f64,
        "no failure penalty in the latency estimate"
    );
}
