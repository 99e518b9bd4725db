//! corral-gen: writes the files the packages install that are generated
//! rather than kept by hand: man pages (from the clap definitions and
//! `config::KEYS`), shell completions, the example config, and the D-Bus
//! interface XML (from a running agent's introspection); and checks that
//! the .deb's and the .rpm's file lists in Cargo.toml agree. Built only
//! with `--features gen`, run by `scripts/package`, never installed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::CommandFactory;
use clap_complete::Shell;
use corral::api;
use corral::config::{Args as DaemonArgs, KEYS};
use roff::{bold, italic, roman, Roff};

const USAGE: &str =
    "usage: corral-gen man DIR | completions DIR | config FILE | interfaces DIR | check-assets CARGO_TOML";

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
        "check-assets" => {
            let text = std::fs::read_to_string(&out)
                .with_context(|| format!("reading {}", out.display()))?;
            check_assets(&text).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))
        }
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

/// Destination directories that differ by distribution: (.deb, .rpm).
const DISTRO_DIRS: &[(&str, &str)] = &[(
    // Debian's zsh searches vendor-completions, Fedora's site-functions.
    "/usr/share/zsh/vendor-completions/",
    "/usr/share/zsh/site-functions/",
)];

/// Files only one format lists as assets: the .deb carries the license and
/// changelog through cargo-deb's own fields (as copyright and
/// changelog.Debian.gz), and only the .deb has lintian overrides.
const RPM_ONLY: &[&str] = &[
    "packaging/changelog",
    "packaging/LICENSE-MIT",
    "packaging/LICENSE-APACHE",
];
const DEB_ONLY: &[&str] = &["packaging/lintian-overrides"];

/// Checks that the .deb and .rpm asset lists of `cargo_toml` name the same
/// sources at the same destinations with the same modes, apart from
/// `DISTRO_DIRS`, `RPM_ONLY` and `DEB_ONLY`.
fn check_assets(cargo_toml: &str) -> Result<(), String> {
    type Asset = (String, String, String);
    let doc: toml::Table = cargo_toml.parse().map_err(|e| format!("{e}"))?;
    let meta = doc
        .get("package")
        .and_then(|p| p.get("metadata"))
        .ok_or("no [package.metadata]")?;
    let list = |table: &str| {
        meta.get(table)
            .and_then(|t| t.get("assets"))
            .and_then(|a| a.as_array())
            .ok_or(format!("no {table} assets"))
    };
    let text = |v: Option<&toml::Value>| v.and_then(|v| v.as_str()).unwrap_or("").to_string();
    let mut deb: Vec<Asset> = Vec::new();
    for a in list("deb")? {
        let a = a
            .as_array()
            .ok_or("a deb asset is not [source, dest, mode]")?;
        let mut dest = format!("/{}", text(a.get(1)));
        for (deb_dir, rpm_dir) in DISTRO_DIRS {
            if let Some(rest) = dest.strip_prefix(deb_dir) {
                dest = format!("{rpm_dir}{rest}");
            }
        }
        deb.push((text(a.first()), dest, text(a.get(2))));
    }
    let mut rpm: Vec<Asset> = Vec::new();
    for a in list("generate-rpm")? {
        rpm.push((
            text(a.get("source")),
            text(a.get("dest")),
            text(a.get("mode")),
        ));
    }
    deb.retain(|a| !DEB_ONLY.contains(&a.0.as_str()));
    rpm.retain(|a| !RPM_ONLY.contains(&a.0.as_str()));
    deb.sort();
    rpm.sort();
    let only = |a: &[Asset], b: &[Asset]| -> Vec<String> {
        a.iter()
            .filter(|x| !b.contains(x))
            .map(|(s, d, m)| format!("{s} -> {d} ({m})"))
            .collect()
    };
    let (deb_only, rpm_only) = (only(&deb, &rpm), only(&rpm, &deb));
    if deb_only.is_empty() && rpm_only.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the deb and rpm asset lists differ; only in deb: {deb_only:?}; only in rpm: {rpm_only:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packages_list_the_same_files() {
        check_assets(include_str!("../../Cargo.toml")).unwrap();
    }

    #[test]
    fn check_assets_finds_a_differing_mode_and_a_missing_file() {
        let toml = r#"
            [package.metadata.deb]
            assets = [["a", "usr/bin/a", "755"], ["b", "usr/share/zsh/vendor-completions/_b", "644"]]
            [package.metadata.generate-rpm]
            assets = [{ source = "a", dest = "/usr/bin/a", mode = "644" }]
        "#;
        let err = check_assets(toml).unwrap_err();
        assert!(err.contains("a -> /usr/bin/a (755)"), "{err}");
        assert!(
            err.contains("b -> /usr/share/zsh/site-functions/_b (644)"),
            "{err}"
        );
        let fixed = toml.replace(
            "mode = \"644\" }]",
            "mode = \"755\" }, \
            { source = \"b\", dest = \"/usr/share/zsh/site-functions/_b\", mode = \"644\" }]",
        );
        check_assets(&fixed).unwrap();
    }

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
