//! `lanparty-perf lab`: builds the lab, runs the checks, prints the table, tears down (or, with
//! `--keep`, waits for Ctrl-C first).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{
    Lab, LabConfig, RELAY_METRICS, ReportOptions, TunnelBinaries, TunnelSettings, Variant,
};
use anyhow::Context as _;

/// Options of `lanparty-perf lab`.
#[derive(Debug, clap::Args)]
pub struct LabArgs {
    /// Plug the clients straight into the party bridge (the no-tunnel baseline).
    #[arg(long)]
    pub direct: bool,
    /// Leave the lab up after the checks until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
    /// Seconds of each iperf3 run (0 skips throughput).
    #[arg(long, default_value_t = 3)]
    pub iperf_secs: u32,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Directory with lanparty-relay, lanparty-gateway and lanparty-client (tunnel variant,
    /// the default; default directory: next to this program).
    #[arg(long)]
    pub bin_dir: Option<std::path::PathBuf>,
}

/// Raises the returned flag on Ctrl-C (SIGINT), from a thread running a small tokio runtime.
fn stop_on_ctrl_c() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal runtime")?;
    // Register before returning so that no Ctrl-C is missed between here and the first check.
    let signal = rt
        .block_on(async {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        })
        .context("installing the SIGINT handler")?;
    let set = Arc::clone(&flag);
    std::thread::spawn(move || {
        let mut signal = signal;
        rt.block_on(signal.recv());
        eprintln!("lab: Ctrl-C: tearing down");
        set.store(true, Ordering::Relaxed);
    });
    Ok(flag)
}

/// Prints how to enter the namespaces and waits for Ctrl-C.
fn keep_until_ctrl_c(lab: &Lab, stop: &AtomicBool) {
    println!("The lab stays up until Ctrl-C. Enter a namespace with:");
    for n in lab.nodes() {
        println!("  {:<6} ip netns exec {} bash", n.role, n.ns_name());
    }
    println!("Logs, leases and pid files: {}", lab.dir().display());
    if lab.variant() == Variant::Tunnel
        && let Ok(relay) = lab.node("relay")
    {
        println!(
            "The relay's rooms and peers: ip netns exec {} lanparty-relay status --metrics {}",
            relay.ns_name(),
            RELAY_METRICS
        );
    }
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `lanparty-perf lab`: builds the lab (direct or tunnelled), prints progress lines on
/// stderr and the report table on stdout, optionally writes the JSON report, keeps the lab up
/// until Ctrl-C with `--keep`, and tears it down.
///
/// # Errors
///
/// Not root, tunnel programs not built, a failed build, a tunnel program that does not come
/// up, or failed checks.
pub fn run_command(args: &LabArgs) -> anyhow::Result<()> {
    if !lanparty_datapath::sys::netns::is_root() {
        anyhow::bail!("the lab needs root (network namespaces); run it with sudo");
    }
    let bins = args
        .bin_dir
        .as_deref()
        .map_or_else(TunnelBinaries::next_to_current_exe, TunnelBinaries::in_dir);
    if !args.direct {
        // Before building anything: a missing program is the commonest first-run problem.
        bins.check()?;
    }
    let stop = stop_on_ctrl_c()?;
    let config = if args.direct {
        LabConfig::direct()
    } else {
        LabConfig::tunnel()
    };
    let mut progress = |line: &str| eprintln!("lab: {line}");
    let mut lab = Lab::build(&config, &mut progress, &stop).context("building the lab")?;
    if !args.direct
        && let Err(e) = lab.start_tunnel_with(&bins, &TunnelSettings::default(), &mut progress)
    {
        eprintln!(
            "lab: the tunnel did not come up; logs: {}",
            lab.dir().display()
        );
        if args.keep {
            keep_until_ctrl_c(&lab, &stop);
        }
        return Err(e).context("starting relay, gateway and clients");
    }
    let opts = ReportOptions {
        iperf_secs: args.iperf_secs,
        ..ReportOptions::default()
    };
    let report = lab.report(&opts, &mut progress, &stop);
    println!("{}", report.to_markdown());
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.keep && !stop.load(Ordering::Relaxed) {
        keep_until_ctrl_c(&lab, &stop);
    }
    drop(lab);
    eprintln!("lab: torn down");
    if !report.all_passed() {
        anyhow::bail!("some lab checks failed");
    }
    Ok(())
}
