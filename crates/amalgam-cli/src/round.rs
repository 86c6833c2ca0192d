//! `amalgam round status|watch|wait`: a round as the aggregator reports it (phase, deadline,
//! who answered in the phase, the published result's cohort), read over the member's mutual
//! TLS channel. `status` prints once; `watch` follows the round until it ends (a progress bar
//! on a terminal, plain lines otherwise); `wait` blocks quietly. Exit status: 0 the round
//! finished, 1 it aborted (or failed), 3 `--timeout` passed, 4 authentication, 5 unreachable.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use amalgam_net::api::{self, RoundResult, RoundStatus};
use serde::Serialize;

use crate::Failure;
use crate::aggregator::{Aggregator, MAX_SMALL, Member};
use crate::config::{Config, Format, Section, print_json};

/// `amalgam round …`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print the round's phase, deadline, answers in the phase and result summary.
    Status(RoundArgs),
    /// Follow the round until it finishes (exit 0) or aborts (exit 1).
    Watch(RoundArgs),
    /// Block until the round finishes (0), aborts (1) or `--timeout` passes (3).
    Wait(RoundArgs),
}

/// Options shared by the three commands (each also read from `[round]` of the config).
#[derive(Debug, clap::Args)]
pub struct RoundArgs {
    /// The co-signed consortium manifest.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// This member's identity key file.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The aggregator, `https://host:port`.
    #[arg(long)]
    aggregator: Option<String>,
    /// The round (default: the highest round the aggregator knows).
    #[arg(long)]
    round: Option<u64>,
    /// Plain HTTP to a loopback development aggregator (no result summary there).
    #[arg(long)]
    insecure: bool,
    /// `wait`/`watch`: give up after this many seconds (exit 3); default 3600.
    #[arg(long)]
    timeout: Option<u64>,
    /// `wait`/`watch`: seconds between polls; default 2.
    #[arg(long)]
    interval: Option<u64>,
    /// Output format.
    #[arg(long, value_enum)]
    format: Option<Format>,
}

/// What `round status` prints (`--format json`).
#[derive(Debug, Serialize)]
struct View {
    round: u64,
    scheme: String,
    phase: String,
    deadline_ms: Option<u64>,
    /// Seconds from the aggregator's clock to the deadline (negative: past).
    deadline_in_s: Option<i64>,
    /// Sites whose upload for the phase was accepted, of those expected (the survivors of
    /// the previous phase).
    responded: u32,
    expected: u32,
    model_digest: String,
    aborted: Option<String>,
    result: Option<ResultSummary>,
    /// `watch`/`wait`: the sites that went on from each phase seen closing (the next phase's
    /// expected count; the contributors for the last), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    survivors: Vec<(String, u32)>,
}

/// The published result, without the sum's values.
#[derive(Debug, Serialize)]
struct ResultSummary {
    contributors: Vec<u16>,
    dropped: Vec<u16>,
    blamed: Vec<u16>,
    sum_len: usize,
}

struct Ctx {
    agg: Aggregator,
    round: Option<u64>,
    insecure: bool,
    format: Format,
    timeout: Duration,
    interval: Duration,
}

fn context(a: &RoundArgs, config: &Config) -> Result<Ctx, Failure> {
    let s: Section<'_> = config.section("round");
    let manifest = s.require_path("manifest", a.manifest.as_deref())?;
    let key = s.require_path("key", a.key.as_deref())?;
    let url = s.require_string("aggregator", a.aggregator.as_deref())?;
    let insecure = s.bool("insecure", a.insecure)?;
    let format = s.format(a.format)?;
    let timeout = Duration::from_secs(s.u64("timeout", a.timeout)?.unwrap_or(3600));
    let interval = Duration::from_secs(s.u64("interval", a.interval)?.unwrap_or(2).max(1));
    let member = Member::load(&manifest, &key)?;
    // The result carries the sum (JSON, up to 21 characters a value): bound the answer by
    // the manifest's sizes, as the site agent does.
    let params = member.manifest.round_params(0)?;
    let max = amalgam_site::http::max_message_answer(params.n(), params.d()).max(MAX_SMALL);
    let agg = Aggregator::connect(&url, &member, insecure, max)?;
    Ok(Ctx {
        agg,
        round: a.round,
        insecure,
        format,
        timeout,
        interval,
    })
}

/// Runs `amalgam round …`.
pub fn run(args: &Args, config: &Config) -> Result<(), Failure> {
    match &args.command {
        Command::Status(a) => status(&context(a, config)?),
        Command::Watch(a) => follow(&context(a, config)?, true),
        Command::Wait(a) => follow(&context(a, config)?, false),
    }
}

/// The round's status and the aggregator's clock, from `/v1/status` (served in `--insecure`
/// mode too).
fn fetch(agg: &Aggregator, round: Option<u64>) -> Result<(RoundStatus, u64), Failure> {
    let status = agg.status()?;
    let pick = match round {
        Some(r) => status.rounds.iter().find(|s| s.round == r),
        None => status.rounds.iter().max_by_key(|s| s.round),
    };
    match pick {
        Some(r) => Ok((r.clone(), status.server_time_ms)),
        None => Err(Failure::failed(match round {
            Some(r) => format!("{}: the aggregator knows no round {r}", agg.url),
            None => format!("{}: the aggregator has no round yet", agg.url),
        })),
    }
}

/// The published result of a finished round. Only "no result" (404) is `None`: a refusal
/// (401/403), a pin failure or a malformed answer is an error, never a silent exit 0.
fn result_summary(ctx: &Ctx, round: u64) -> Result<Option<ResultSummary>, Failure> {
    if ctx.insecure {
        return Ok(None);
    }
    let path = format!("{}?wait=1", api::result_path(round));
    let resp = ctx.agg.get(&path)?;
    if resp.status.as_u16() == 404 {
        return Ok(None);
    }
    if !resp.status.is_success() {
        return Err(crate::aggregator::refusal(&ctx.agg.url, &path, &resp));
    }
    let r: RoundResult = serde_json::from_slice(&resp.body)
        .map_err(|e| Failure::failed(format!("{}{path}: malformed answer: {e}", ctx.agg.url)))?;
    if r.round != round {
        return Err(Failure::failed(format!(
            "{}{path}: the result is round {}'s",
            ctx.agg.url, r.round
        )));
    }
    Ok(Some(ResultSummary {
        contributors: r.contributors,
        dropped: r.dropped,
        blamed: r.blamed,
        sum_len: r.sum.len(),
    }))
}

fn view(ctx: &Ctx, s: RoundStatus, now_ms: u64) -> Result<View, Failure> {
    let result = if s.phase == "finished" {
        result_summary(ctx, s.round)?
    } else {
        None
    };
    Ok(View {
        round: s.round,
        deadline_in_s: s
            .deadline_ms
            .map(|d| (i128::from(d) - i128::from(now_ms)).clamp(-(1 << 40), 1 << 40) as i64 / 1000),
        scheme: amalgam_site::http::printable_detail(&s.scheme),
        phase: amalgam_site::http::printable_detail(&s.phase),
        deadline_ms: s.deadline_ms,
        responded: s.responded,
        expected: s.expected,
        model_digest: amalgam_site::http::printable_detail(&s.model_digest),
        aborted: s.aborted.map(|a| amalgam_site::http::printable_detail(&a)),
        result,
        survivors: Vec::new(),
    })
}

fn text(v: &View) -> String {
    let mut out = format!("round {}: {} ({})\n", v.round, v.phase, v.scheme);
    if let (Some(d), Some(left)) = (v.deadline_ms, v.deadline_in_s) {
        out.push_str(&format!(
            "deadline: {} (in {left} s by the aggregator's clock)\n",
            utc(d)
        ));
    }
    if v.phase != "finished" && v.phase != "aborted" {
        out.push_str(&format!(
            "answered this phase: {} of {} expected\n",
            v.responded, v.expected
        ));
    }
    out.push_str(&format!("model: {}\n", v.model_digest));
    if let Some(a) = &v.aborted {
        out.push_str(&format!("aborted: {a}\n"));
    }
    if !v.survivors.is_empty() {
        let steps: Vec<String> = v
            .survivors
            .iter()
            .map(|(p, n)| format!("{} {n}", amalgam_site::http::printable_detail(p)))
            .collect();
        out.push_str(&format!("survivors per phase: {}\n", steps.join(", ")));
    }
    if let Some(r) = &v.result {
        out.push_str(&format!(
            "result: {} contributors {:?}, dropped {:?}, blamed {:?}, sum of {} values\n",
            r.contributors.len(),
            r.contributors,
            r.dropped,
            r.blamed,
            r.sum_len
        ));
    }
    out
}

/// Unix milliseconds as RFC 3339 UTC (seconds precision).
pub(crate) fn utc(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn outcome(phase: &str, round: u64) -> Option<Result<(), Failure>> {
    match phase {
        "finished" => Some(Ok(())),
        "aborted" => Some(Err(Failure::failed(format!("round {round} aborted")))),
        _ => None,
    }
}

fn status(ctx: &Ctx) -> Result<(), Failure> {
    let (s, now) = fetch(&ctx.agg, ctx.round)?;
    let v = view(ctx, s, now)?;
    match ctx.format {
        Format::Json => print_json(&v),
        Format::Text => {
            print!("{}", text(&v));
            Ok(())
        }
    }
}

fn follow(ctx: &Ctx, show: bool) -> Result<(), Failure> {
    let start = Instant::now();
    let bar = (show && ctx.format == Format::Text && std::io::stderr().is_terminal())
        .then(indicatif::ProgressBar::no_length);
    let mut last: Option<(String, u32, u32)> = None;
    let mut survivors: Vec<(String, u32)> = Vec::new();
    let mut round = ctx.round;
    loop {
        let (s, now) = fetch(&ctx.agg, round)?;
        round = Some(s.round);
        let key = (s.phase.clone(), s.responded, s.expected);
        let prev_phase = last.as_ref().map(|(p, _, _)| p.clone());
        if let Some(prev) = &prev_phase
            && *prev != s.phase
            && s.phase != "aborted"
            && s.phase != "finished"
        {
            survivors.push((prev.clone(), s.expected));
        }
        let changed = last.as_ref() != Some(&key);
        last = Some(key);
        if show && changed {
            match (&bar, ctx.format) {
                (Some(b), _) => {
                    b.set_length(u64::from(s.expected));
                    b.set_position(u64::from(s.responded));
                    b.set_message(format!(
                        "round {} {}",
                        s.round,
                        amalgam_site::http::printable_detail(&s.phase)
                    ));
                }
                (None, Format::Json) => {
                    let line = serde_json::to_string(&view(ctx, s.clone(), now)?)
                        .map_err(|e| Failure::failed(e.to_string()))?;
                    println!("{line}");
                }
                (None, Format::Text) => println!(
                    "{}s round {} {}: {}/{} answered",
                    start.elapsed().as_secs(),
                    s.round,
                    amalgam_site::http::printable_detail(&s.phase),
                    s.responded,
                    s.expected
                ),
            }
        }
        if let Some(end) = outcome(&s.phase, s.round) {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            let mut v = view(ctx, s, now)?;
            if let (Some(prev), Some(r)) = (&prev_phase, &v.result)
                && prev != "finished"
            {
                survivors.push((prev.clone(), r.contributors.len() as u32));
            }
            v.survivors = survivors;
            if show && ctx.format == Format::Text {
                print!("{}", text(&v));
            } else if !show && ctx.format == Format::Json {
                print_json(&v)?;
            }
            return end;
        }
        if start.elapsed() >= ctx.timeout {
            return Err(Failure::with(
                3,
                format!(
                    "round {}: still in {} after {} s",
                    s.round,
                    amalgam_site::http::printable_detail(&s.phase),
                    ctx.timeout.as_secs()
                ),
            ));
        }
        let left = ctx.timeout.saturating_sub(start.elapsed());
        std::thread::sleep(ctx.interval.min(left).max(Duration::from_millis(100)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_798_761_599_000), "2026-12-31T23:59:59Z");
    }
}
