//! corral-gen: writes the files the packages install that are generated
//! rather than kept by hand: man pages (from the clap definitions and
//! `config::KEYS`), shell completions, the example config, and the D-Bus
//! interface XML (from a running agent's introspection). Built only with
//! `--features gen`, run by `scripts/package`, never installed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::CommandFactory;
use clap_complete::Shell;
use corral::api;
use corral::config::{Args as DaemonArgs, KEYS};
use roff::{bold, italic, roman, Roff};

const USAGE: &str = "usage: corral-gen man DIR | completions DIR | config FILE | interfaces DIR";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [what, out] = args.as_slice() else {
        bail!(USAGE);
    };
    let out = PathBuf::from(out);
    match what.as_str() {
        "man" => man_pages(&out),
        "completions" => completions(&out),
        "config" => write(&out, example_config()),
        "interfaces" => interfaces(&out),
        _ => bail!(USAGE),
    }
}

fn write(path: &Path, text: impl AsRef<[u8]>) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn render(man: clap_mangen::Man) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    man.render(&mut buf)?;
    Ok(buf)
}

fn man_pages(dir: &Path) -> anyhow::Result<()> {
    let ctl = corral::cli::command();
    write(
        &dir.join("corralctl.1"),
        render(clap_mangen::Man::new(ctl))?,
    )?;
    let daemon = DaemonArgs::command();
    write(
        &dir.join("corrald.8"),
        render(clap_mangen::Man::new(daemon).section("8"))?,
    )?;
    write(&dir.join("corrald.toml.5"), config_man_page())
}

/// corrald.toml(5), from the key table the config parser is tested against.
fn config_man_page() -> String {
    let version = env!("CARGO_PKG_VERSION");
    let mut r = Roff::new();
    r.control(
        "TH",
        ["CORRALD.TOML", "5", "", &format!("corral {version}")],
    );
    r.control("SH", ["NAME"]);
    r.text([roman(
        "corrald.toml - settings of corrald, the corral agent",
    )]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([
        italic("$XDG_CONFIG_HOME/corral/corrald.toml"),
        roman(" (user agent), "),
        italic("/etc/corral/corrald.toml"),
        roman(" (system agent)"),
    ]);
    r.control("SH", ["DESCRIPTION"]);
    r.text([roman(
        "A TOML file read once when corrald starts; corrald --config names another one \
         (which must then exist). Every key is optional; an unknown key or a bad value stops \
         corrald at start with a message naming the key. Durations are a number of seconds \
         or a string with a unit (\"500ms\", \"10s\", \"5m\", \"2h\", \"7d\"); sizes are \
         bytes or a string (\"10M\", \"1G\").",
    )]);
    r.control("SH", ["KEYS"]);
    for k in KEYS {
        r.control("TP", []);
        let default = k.default.unwrap_or(k.default_text);
        r.text([
            bold(k.name),
            roman(" (default: "),
            italic(default),
            roman(")"),
        ]);
        r.text([roman(k.doc)]);
    }
    r.control("SH", ["ENVIRONMENT"]);
    r.control("TP", []);
    r.text([bold("CORRAL_LOG")]);
    r.text([roman(
        "Log filter of corrald (e.g. debug, corral=trace). Under systemd corrald logs \
         to the journal, elsewhere to stderr.",
    )]);
    r.control("SH", ["SEE ALSO"]);
    r.text([roman("corrald(8), corralctl(1)")]);
    r.render()
}

fn completions(dir: &Path) -> anyhow::Result<()> {
    // File names as each shell's completion loader looks them up.
    for (shell, file) in [
        (Shell::Bash, "bash/corralctl"),
        (Shell::Zsh, "zsh/_corralctl"),
        (Shell::Fish, "fish/corralctl.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut corral::cli::command(), "corralctl", &mut buf);
        write(&dir.join(file), buf)?;
    }
    Ok(())
}

/// The example config: every key commented out at its default.
fn example_config() -> String {
    let mut s = String::from(
        "# corrald.toml: settings of corrald, the corral agent; see corrald.toml(5).\n\
         # The user agent reads ~/.config/corral/corrald.toml, the system agent\n\
         # /etc/corral/corrald.toml. Every key is optional; shown are the defaults.\n",
    );
    for k in KEYS {
        s.push_str(&format!("\n# {}\n", k.doc));
        match k.default {
            Some(v) => s.push_str(&format!("#{} = {v}\n", k.name)),
            None => s.push_str(&format!(
                "# default: {}\n#{} = \"/absolute/path\"\n",
                k.default_text, k.name
            )),
        }
    }
    s
}

/// Writes `<interface>.xml` for the manager and process interfaces, cut
/// from the introspection of the agent on the session bus, which must
/// supervise at least one process (so a process object exists).
fn interfaces(dir: &Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let conn = zbus::Connection::session().await?;
        let objects = zbus::fdo::ObjectManagerProxy::builder(&conn)
            .destination(api::BUS_NAME)?
            .path(api::MANAGER_PATH)?
            .build()
            .await?
            .get_managed_objects()
            .await
            .context("listing the agent's objects")?;
        let process = objects
            .iter()
            .find(|(_, ifaces)| ifaces.keys().any(|i| i.as_str() == api::PROCESS_INTERFACE))
            .map(|(path, _)| path.to_string())
            .context("the agent supervises no process: start one first")?;
        for (path, iface) in [
            (api::MANAGER_PATH.to_string(), api::MANAGER_INTERFACE),
            (process, api::PROCESS_INTERFACE),
        ] {
            let xml = zbus::fdo::IntrospectableProxy::builder(&conn)
                .destination(api::BUS_NAME)?
                .path(path.as_str())?
                .build()
                .await?
                .introspect()
                .await
                .with_context(|| format!("introspecting {path}"))?;
            write(
                &dir.join(format!("{iface}.xml")),
                interface_document(&xml, iface)?,
            )?;
        }
        Ok(())
    })
}

/// The `<interface name="IFACE">` element of an introspection document,
/// alone in a document of its own (the form /usr/share/dbus-1/interfaces
/// holds). Interface elements do not nest, so the first closing tag after
/// the opening one ends it.
fn interface_document(xml: &str, iface: &str) -> anyhow::Result<String> {
    let open = format!("<interface name=\"{iface}\">");
    let start = xml
        .find(&open)
        .with_context(|| format!("no {iface} in the introspection"))?;
    let len = xml[start..]
        .find("</interface>")
        .context("unterminated interface element")?;
    let element = &xml[start..start + len + "</interface>".len()];
    Ok(format!(
        "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \
         \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node>\n  {element}\n</node>\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_document_keeps_only_the_named_interface() {
        let xml = "<node><interface name=\"org.freedesktop.DBus.Peer\"><method name=\"Ping\"/></interface>\
                   <interface name=\"a.B\"><method name=\"M\"/></interface><node name=\"x\"/></node>";
        let doc = interface_document(xml, "a.B").unwrap();
        assert!(
            doc.contains("<interface name=\"a.B\"><method name=\"M\"/></interface>\n</node>"),
            "{doc}"
        );
        assert!(!doc.contains("Peer"), "{doc}");
        assert!(interface_document(xml, "c.D").is_err());
    }

    #[test]
    fn example_config_parses_to_the_defaults() {
        std::env::set_var("HOME", "/home/test");
        let uncommented: String = example_config()
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.contains(" = ") && !l.starts_with("state_dir"))
            .map(|l| format!("{l}\n"))
            .collect();
        let mode = corral::config::Mode::User;
        assert_eq!(
            corral::config::Config::parse(mode, &uncommented).unwrap(),
            corral::config::Config::defaults(mode).unwrap()
        );
    }
}
