//! `include = ["conf.d/*.toml"]`: a configuration split over several files validates to exactly
//! what the single file gives, and every problem names the file and the path inside it.

use std::path::{Path, PathBuf};
use std::process::Command;

use hazgate::config::{self, LoadError};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(&p, text).expect("write");
    p
}

fn copy_maps(dir: &Path) {
    let to = dir.join("maps");
    std::fs::create_dir_all(&to).expect("mkdir maps");
    for e in std::fs::read_dir(root().join("config/maps")).expect("maps") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy map");
    }
}

/// Moves the second half of every array of tables (top level and under `[alarms]`,
/// `[notifications]`) into two included files, keeping the order of the elements.
fn split(doc: &toml::Table) -> (toml::Table, toml::Table, toml::Table) {
    let mut main = doc.clone();
    let mut a = toml::Table::new();
    let mut b = toml::Table::new();
    fn take(from: &mut toml::Table, a: &mut toml::Table, b: &mut toml::Table) {
        for (k, v) in from.iter_mut() {
            if let toml::Value::Array(items) = v {
                if items.len() >= 2 && items.iter().all(toml::Value::is_table) {
                    let half = items.len() / 2;
                    let mut tail = items.split_off(half);
                    let last = tail.split_off(tail.len().div_ceil(2));
                    a.insert(k.clone(), toml::Value::Array(tail));
                    if !last.is_empty() {
                        b.insert(k.clone(), toml::Value::Array(last));
                    }
                }
            }
        }
    }
    take(&mut main, &mut a, &mut b);
    for section in ["alarms", "notifications"] {
        if let Some(toml::Value::Table(t)) = main.get_mut(section) {
            let (mut sa, mut sb) = (toml::Table::new(), toml::Table::new());
            take(t, &mut sa, &mut sb);
            if !sa.is_empty() {
                a.insert(section.into(), toml::Value::Table(sa));
            }
            if !sb.is_empty() {
                b.insert(section.into(), toml::Value::Table(sb));
            }
        }
    }
    (main, a, b)
}

#[test]
fn a_split_configuration_validates_to_the_single_file_one() {
    let mut checked = 0;
    for name in ["example.toml", "demo.toml", "tankfarm-dust.toml"] {
        let text = std::fs::read_to_string(root().join("config").join(name)).expect("read");
        let doc: toml::Table = text.parse().expect("toml");
        let dir = tempfile::tempdir().expect("tempdir");
        copy_maps(dir.path());
        let single = write(dir.path(), "single.toml", &text);
        let (mut main, a, b) = split(&doc);
        assert!(!a.is_empty(), "{name}: nothing moved to an included file");
        main.insert(
            "include".into(),
            toml::Value::Array(vec!["conf.d/*.toml".into()]),
        );
        let main = write(
            dir.path(),
            "main.toml",
            &toml::to_string(&main).expect("ser"),
        );
        write(
            dir.path(),
            "conf.d/10-a.toml",
            &toml::to_string(&a).expect("ser"),
        );
        write(
            dir.path(),
            "conf.d/20-b.toml",
            &toml::to_string(&b).expect("ser"),
        );
        // Not matched by the glob: neither another extension nor a hidden file.
        write(dir.path(), "conf.d/30-c.toml.bak", "garbage = [");
        write(dir.path(), "conf.d/.#10-a.toml", "garbage = [");

        let (one, w1) = config::load(&single).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let (many, w2, files) =
            config::load_files(&main).unwrap_or_else(|e| panic!("{name} split: {e:?}"));
        assert_eq!(
            format!("{one:?}"),
            format!("{many:?}"),
            "{name}: split differs"
        );
        assert_eq!(
            w1.len(),
            w2.len(),
            "{name}: warnings differ: {w1:?} / {w2:?}"
        );
        let names: Vec<_> = files
            .iter()
            .map(|f| f.strip_prefix(dir.path()).expect("under dir").to_owned())
            .collect();
        let expect: Vec<PathBuf> = if b.is_empty() {
            vec!["main.toml".into(), "conf.d/10-a.toml".into()]
        } else {
            vec![
                "main.toml".into(),
                "conf.d/10-a.toml".into(),
                "conf.d/20-b.toml".into(),
            ]
        };
        // An empty included file is still read and listed.
        assert_eq!(names[..2], expect[..2], "{name}");
        checked += 1;
    }
    assert_eq!(checked, 3);
}

const MAIN: &str = r#"
include = ["conf.d/*.toml"]

[site]
id = "s"

[[sources]]
kind = "modbus_tcp"
id = "bus"
address = "127.0.0.1:502"

[[device_maps]]
id = "gas"
[[device_maps.registers]]
name = "lel"
table = "input"
address = 0
type = "u16"
kind = "combustible_gas"
unit = "%LEL"
span = { raw = [4000, 20000], eng = [0, 100] }
valid = [3600, 21000]

[[devices]]
id = "gd1"
area = "a"
source = "bus"
unit_id = 1
map = "gas"
"#;

fn problems(e: LoadError) -> Vec<String> {
    match e {
        LoadError::Invalid { problems, .. } => problems.iter().map(|p| p.to_string()).collect(),
        other => panic!("expected validation problems, got {other:?}"),
    }
}

#[test]
fn problems_name_the_file_and_the_path_inside_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = write(dir.path(), "site.toml", MAIN);
    write(
        dir.path(),
        "conf.d/tankfarm.toml",
        r#"
[[devices]]
id = "gd2"
area = "a"
source = "bus"
unit_id = 2
map = "gas"

[[devices]]
id = "gd3"
area = "a"
source = "nope"
unit_id = 3
map = "gas"
"#,
    );
    let p = problems(config::load(&main).expect_err("unknown source"));
    assert!(
        p.iter()
            .any(|l| l.starts_with("error: conf.d/tankfarm.toml: devices[1].source:")),
        "{p:?}"
    );
    // The main file's own paths stay as they are.
    assert!(!p.iter().any(|l| l.contains("devices[2]")), "{p:?}");
}

#[test]
fn a_duplicate_id_across_files_names_both_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = write(dir.path(), "site.toml", MAIN);
    write(
        dir.path(),
        "conf.d/a.toml",
        "[[devices]]\nid = \"gd2\"\narea = \"a\"\nsource = \"bus\"\nunit_id = 2\nmap = \"gas\"\n",
    );
    write(
        dir.path(),
        "conf.d/b.toml",
        "[[devices]]\nid = \"gd2\"\narea = \"a\"\nsource = \"bus\"\nunit_id = 3\nmap = \"gas\"\n",
    );
    let p = problems(config::load(&main).expect_err("duplicate"));
    assert!(
        p.iter().any(
            |l| l.starts_with("error: conf.d/b.toml: devices[0].id: duplicate")
                && l.contains("first defined at conf.d/a.toml: devices[0].id")
        ),
        "{p:?}"
    );
    // Against the main file: the first is named by its plain path.
    write(
        dir.path(),
        "conf.d/b.toml",
        "[[devices]]\nid = \"gd1\"\narea = \"a\"\nsource = \"bus\"\nunit_id = 3\nmap = \"gas\"\n",
    );
    let p = problems(config::load(&main).expect_err("duplicate"));
    assert!(
        p.iter().any(
            |l| l.starts_with("error: conf.d/b.toml: devices[0].id: duplicate")
                && l.contains("first defined at devices[0].id")
        ),
        "{p:?}"
    );
}

#[test]
fn parse_errors_name_the_included_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = write(dir.path(), "site.toml", MAIN);
    let part = write(
        dir.path(),
        "conf.d/x.toml",
        "\n[[devices]]\nid = \"gd2\"\narea = \"a\"\nsource = \"bus\"\nunit_id = \"two\"\nmap = \"gas\"\n",
    );
    match config::load(&main).expect_err("mistyped") {
        LoadError::Parse { path, message } => {
            assert_eq!(path, part);
            assert!(message.contains("line 6"), "{message}");
            assert!(message.contains("unit_id"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(&part, "[[devices]\n").expect("write");
    match config::load(&main).expect_err("syntax") {
        LoadError::Parse { path, .. } => assert_eq!(path, part),
        other => panic!("{other:?}"),
    }
    std::fs::write(&part, "[[devices]]\nid = \"gd2\"\ncolour = \"red\"\n").expect("write");
    match config::load(&main).expect_err("unknown field") {
        LoadError::Parse { path, message } => {
            assert_eq!(path, part);
            assert!(message.contains("colour"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_singleton_table_defined_twice_names_both_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = write(dir.path(), "site.toml", MAIN);
    let part = write(dir.path(), "conf.d/x.toml", "[site]\nname = \"again\"\n");
    match config::load(&main).expect_err("site twice") {
        LoadError::Parse { path, message } => {
            assert_eq!(path, part);
            assert!(message.contains("`site`"), "{message}");
            assert!(message.contains("site.toml"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A table defined in one file only is fine wherever it is.
    std::fs::write(&part, "[gateway]\nsample_queue = 10\n").expect("write");
    config::load(&main).expect("a table defined once is fine");
}

#[test]
fn includes_do_not_nest_and_missing_paths_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = write(dir.path(), "site.toml", MAIN);
    let part = write(
        dir.path(),
        "conf.d/x.toml",
        "include = [\"../site.toml\"]\n",
    );
    match config::load(&main).expect_err("nested include") {
        LoadError::Parse { path, message } => {
            assert_eq!(path, part);
            assert!(message.contains("only the main file"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::remove_file(&part).expect("rm");
    // A glob that matches nothing is a warning.
    let (_, warnings) = config::load(&main).expect("valid without includes");
    assert!(
        warnings
            .iter()
            .any(|w| w.path == "include[0]" && w.message.contains("matches no file")),
        "{warnings:?}"
    );
    // A missing plain path is an error.
    let main2 = write(
        dir.path(),
        "site2.toml",
        &MAIN.replace("conf.d/*.toml", "conf.d/tankfarm.toml"),
    );
    match config::load(&main2).expect_err("missing include") {
        LoadError::Parse { message, .. } => {
            assert!(message.contains("include[0]"), "{message}");
            assert!(message.contains("no such file"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn check_config_lists_the_files_it_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = write(dir.path(), "site.toml", MAIN);
    write(
        dir.path(),
        "conf.d/a.toml",
        "[[devices]]\nid = \"gd2\"\narea = \"a\"\nsource = \"bus\"\nunit_id = 2\nmap = \"gas\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .arg("check-config")
        .arg(&main)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("读取了 2 个文件"), "{stdout}");
    assert!(stdout.contains("conf.d/a.toml"), "{stdout}");
}
