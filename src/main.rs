//! The `relayd` command: parses the command line, sets up logging and signals, binds the
//! listeners (or takes those systemd passed), and runs the server until SIGINT or SIGTERM.

#![deny(unsafe_code)]

mod cli;

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::thread;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use log::{error, info, warn};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use relayd::{Kind, Listeners, Reloads, Shutdown};

use crate::cli::{Args, Command, Generated, one_line};

fn main() -> ExitCode {
    let parsed = Args::command()
        .try_get_matches()
        .and_then(|m| Ok((Args::from_arg_matches(&m)?, m)));
    let (args, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("relayd: {}", one_line(&e.to_string()));
            return ExitCode::FAILURE;
        }
    };
    match &args.command {
        Some(Command::Ctl { admin, command }) => return ctl(admin, &command.join(" ")),
        Some(Command::Generate { what }) => return generate(*what),
        None => {}
    }
    // With sockets passed by systemd, the default --bind is not wanted; one given on the
    // command line still is.
    let explicit_bind = matches.value_source("bind") == Some(ValueSource::CommandLine);
    env_logger::Builder::new()
        .filter_level(args.log_level())
        .parse_default_env()
        // tungstenite traces every message it reads, a JSON client's `auth` token with it:
        // never below info, whatever RUST_LOG says (secrets never reach a log line).
        .filter_module("tungstenite", log::LevelFilter::Info)
        .format_timestamp_millis()
        .init();
    match serve(&args, explicit_bind) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("relayd: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// `relayd ctl`: prints the answer; exit status 1 for `error: …` or no answer at all.
fn ctl(admin: &std::path::Path, command: &str) -> ExitCode {
    match relayd::ctl(admin, command) {
        Ok(answer) => {
            print!("{answer}");
            if answer.starts_with("error:") {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            eprintln!("relayd: ctl: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("relayd: cannot talk to {}: {e}", admin.display());
            ExitCode::FAILURE
        }
    }
}

/// `relayd generate`: the man page or a completion script, on stdout.
fn generate(what: Generated) -> ExitCode {
    let mut command = Args::command();
    let shell = match what {
        Generated::Man => None,
        Generated::Bash => Some(clap_complete::Shell::Bash),
        Generated::Zsh => Some(clap_complete::Shell::Zsh),
        Generated::Fish => Some(clap_complete::Shell::Fish),
    };
    // Rendered whole first: the output is small, and a write error is then one line.
    let mut text = Vec::new();
    match shell {
        Some(shell) => clap_complete::generate(shell, &mut command, "relayd", &mut text),
        // The man page's NAME line puts "relayd \-" before the description itself.
        None => {
            let man = clap_mangen::Man::new(command.about("relay lines between TCP clients"));
            if let Err(e) = man.render(&mut text) {
                eprintln!("relayd: generate: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match std::io::stdout().lock().write_all(&text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relayd: generate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the daemon as the command line says until SIGINT or SIGTERM: its configuration, its
/// listeners (passed by systemd, then bound), the signal thread, then the server.
fn serve(args: &Args, explicit_bind: bool) -> Result<(), String> {
    let config = args.config()?;
    if !config.chat && (args.motd.is_some() || args.crlf) {
        warn!("--motd and --crlf apply to chat mode only; add --chat");
    }
    let mut listeners = passed_listeners()?;
    bind_listeners(args, explicit_bind, &mut listeners)?;
    let shutdown = Shutdown::new();
    let reloads = Reloads::new();
    handle_signals(&shutdown, &reloads)?;
    relayd::serve(listeners, config, shutdown, reloads).map_err(|e| e.to_string())
}

/// The sockets systemd passed (socket activation), by kind; none without it.
fn passed_listeners() -> Result<Listeners, String> {
    let mut listeners = Listeners {
        relay: Vec::new(),
        ws: Vec::new(),
        metrics: None,
        api: None,
    };
    for (kind, listener) in relayd::passed_listeners()? {
        match kind {
            Kind::Relay => listeners.relay.push(listener),
            Kind::Ws => listeners.ws.push(listener),
            Kind::Metrics if listeners.metrics.is_none() => listeners.metrics = Some(listener),
            Kind::Metrics => return Err("socket activation: more than one 'metrics' socket".into()),
        }
    }
    if !is_empty(&listeners) {
        info!(
            "socket activation: serving {} passed client sockets{}{}",
            listeners.relay.len(),
            match listeners.ws.len() {
                0 => String::new(),
                n => format!(", {n} for browsers"),
            },
            if listeners.metrics.is_some() {
                " and a metrics socket"
            } else {
                ""
            }
        );
    }
    Ok(listeners)
}

fn is_empty(listeners: &Listeners) -> bool {
    listeners.relay.is_empty() && listeners.ws.is_empty() && listeners.metrics.is_none()
}

/// Binds, next to the sockets systemd passed, what `--bind`, `--ws-bind`, `--metrics` and
/// `--api` ask for.
fn bind_listeners(
    args: &Args,
    explicit_bind: bool,
    listeners: &mut Listeners,
) -> Result<(), String> {
    let passed_ws = !listeners.ws.is_empty();
    // Any passed socket means systemd owns the listening: the default --bind is not wanted
    // then, whichever kinds were passed.
    let passed = !is_empty(listeners);
    let binds: &[String] = if !passed || explicit_bind {
        &args.bind
    } else {
        &[]
    };
    if binds.is_empty() && listeners.relay.is_empty() && !passed_ws && args.ws_bind.is_empty() {
        return Err(
            "socket activation passed no socket for clients (only 'metrics'): \
                    pass one named 'relay' or 'ws' too, or give --bind"
                .into(),
        );
    }
    let addrs = binds
        .iter()
        .map(|spec| resolve(spec).map(|addr| (spec, addr)))
        .collect::<Result<Vec<_>, _>>()?;
    // With both families bound, each listener keeps to its own family.
    let v6_only = addrs.iter().any(|(_, a)| a.is_ipv4());
    for (spec, addr) in &addrs {
        listeners
            .relay
            .push(relayd::bind(*addr, v6_only).map_err(|e| format!("cannot bind {spec}: {e}"))?);
    }
    for spec in &args.ws_bind {
        let addr = resolve(spec).map_err(|e| format!("--ws-bind {e}"))?;
        let listener =
            relayd::bind(addr, false).map_err(|e| format!("--ws-bind cannot bind {spec}: {e}"))?;
        listeners.ws.push(listener);
    }
    if let Some(spec) = &args.metrics {
        if listeners.metrics.is_some() {
            return Err(format!(
                "--metrics {spec}: systemd passed a 'metrics' socket already; drop one of them"
            ));
        }
        let addr = resolve(spec).map_err(|e| format!("--metrics {e}"))?;
        let listener =
            relayd::bind(addr, false).map_err(|e| format!("--metrics cannot bind {spec}: {e}"))?;
        listeners.metrics = Some(listener);
    }
    if let Some(spec) = &args.api {
        let addr = resolve(spec).map_err(|e| format!("--api {e}"))?;
        // Without a key, whoever reaches the port may kick and speak for anyone: only this
        // machine may.
        if args.api_key_file.is_none() && !addr.ip().is_loopback() {
            return Err(format!(
                "--api {spec}: not a loopback address, so --api-key-file is required"
            ));
        }
        let listener =
            relayd::bind(addr, false).map_err(|e| format!("--api cannot bind {spec}: {e}"))?;
        listeners.api = Some(listener);
    }
    Ok(())
}

/// Starts the thread that turns SIGINT and SIGTERM into `shutdown` (a second one exits at
/// once) and SIGHUP into a reload request.
fn handle_signals(shutdown: &Shutdown, reloads: &Reloads) -> Result<(), String> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let (shutdown, reloads) = (shutdown.clone(), reloads.clone());
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping = false;
            for sig in signals.forever() {
                if sig == SIGHUP {
                    info!("received SIGHUP, reloading");
                    reloads.request();
                } else if !stopping {
                    info!("received signal {sig}, shutting down");
                    shutdown.trigger();
                    stopping = true;
                } else {
                    error!("second signal: exiting without flushing");
                    std::process::exit(1);
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

fn resolve(spec: &str) -> Result<SocketAddr, String> {
    let mut addrs = spec
        .to_socket_addrs()
        .map_err(|e| format!("cannot bind {spec}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("cannot bind {spec}: no address found"))
}
