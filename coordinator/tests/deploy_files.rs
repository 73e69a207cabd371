//! The files under `deploy/` checked offline with the tools a lab runs them with: every shell
//! script passes `shellcheck`; the systemd units pass `systemd-analyze verify` without a warning
//! and `systemd-analyze security` under a low exposure; every Kubernetes manifest, raw and as
//! `kubectl kustomize` renders it, passes `kubernetes-validate --strict`, and a misspelled field
//! fails it. `.ci/test` installs the tools; a missing one fails these tests.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use coordinator::web::health::{HEALTHZ, READYZ};

/// The workspace root (the coordinator crate's parent).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Runs `tool` (which must be installed: `package` is the Debian or PyPI package holding it).
fn run(tool: &str, package: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `{tool}` ({e}): install {package} (.ci/test does, as root)")
        })
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Shell scripts of the repository: `.sh` and `.sbatch` files and files with a shell shebang,
/// outside build output and dot-directories (but `.ci/`).
fn shell_scripts(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name == "target" || (name.starts_with('.') && name != ".ci") {
                continue;
            }
            shell_scripts(&path, out);
        } else if name.ends_with(".sh") || name.ends_with(".sbatch") {
            out.push(path);
        } else if let Ok(head) = std::fs::read(&path) {
            let first = head.split(|&b| b == b'\n').next().unwrap_or_default();
            let first = String::from_utf8_lossy(first);
            if first.starts_with("#!") && (first.contains("bash") || first.ends_with("/sh")) {
                out.push(path);
            }
        }
    }
}

#[test]
fn every_shell_script_passes_shellcheck() {
    let mut scripts = Vec::new();
    shell_scripts(&root(), &mut scripts);
    scripts.sort();
    for expected in [
        "deploy/slurm/worker.sbatch",
        "deploy/slurm/one-node-cluster.sh",
        ".ci/test",
    ] {
        assert!(
            scripts.contains(&root().join(expected)),
            "{expected} not found among {scripts:?}"
        );
    }
    let args: Vec<&str> = scripts.iter().map(|p| p.to_str().unwrap()).collect();
    let o = run(
        "shellcheck",
        "the Debian package shellcheck",
        &args,
        &root(),
    );
    assert!(o.status.success(), "shellcheck:\n{}", text(&o));

    // The check can fail: an unquoted expansion is reported.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.sh");
    std::fs::write(&bad, "#!/usr/bin/env bash\nrm -rf $1/cache\n").unwrap();
    let o = run(
        "shellcheck",
        "the Debian package shellcheck",
        &[bad.to_str().unwrap()],
        dir.path(),
    );
    assert!(
        !o.status.success() && text(&o).contains("SC2086"),
        "{}",
        text(&o)
    );
}

const UNITS: [(&str, &str); 3] = [
    ("latentsweep-coordinator.service", "coordinator"),
    ("latentsweep-worker@.service", "worker"),
    ("latentsweep-worker-cpu.service", "worker"),
];

/// The units with `/usr/local/bin/` replaced by the freshly built binaries (verify checks that
/// the command exists), written to a temporary directory.
fn units_with_built_binaries(dir: &Path) {
    let coordinator = env!("CARGO_BIN_EXE_coordinator");
    let worker = support::grpc::worker_exe();
    for (unit, bin) in UNITS {
        let text = std::fs::read_to_string(root().join("deploy/systemd").join(unit)).unwrap();
        let exe = match bin {
            "coordinator" => coordinator.to_owned(),
            _ => worker.display().to_string(),
        };
        let from = format!("/usr/local/bin/{bin} ");
        assert!(text.contains(&from), "{unit} must run {from}");
        std::fs::write(dir.join(unit), text.replace(&from, &format!("{exe} "))).unwrap();
    }
}

fn verify(dir: &Path, units: &[&str]) -> Output {
    let mut args = vec!["verify", "--man=no"];
    args.extend_from_slice(units);
    run("systemd-analyze", "systemd", &args, dir)
}

#[test]
fn systemd_units_verify_cleanly_and_are_hardened() {
    let dir = tempfile::tempdir().unwrap();
    units_with_built_binaries(dir.path());
    let instances = [
        "./latentsweep-coordinator.service",
        "./latentsweep-worker@0.service",
        "./latentsweep-worker-cpu.service",
    ];
    // verify reports unknown keys and bad values as warnings with exit status 0: any output
    // is a failure.
    let o = verify(dir.path(), &instances);
    assert!(
        o.status.success() && text(&o).trim().is_empty(),
        "systemd-analyze verify:\n{}",
        text(&o)
    );
    for (unit, _) in UNITS {
        let body = std::fs::read_to_string(dir.path().join(unit)).unwrap();
        for needed in [
            "DynamicUser=yes",
            "ProtectSystem=strict",
            "StateDirectory=",
            "LoadCredential=token:",
            "--token-file %d/token",
        ] {
            assert!(body.contains(needed), "{unit} lacks {needed}");
        }
        assert!(
            !body.contains("LATENTSWEEP_TOKEN=") && !body.contains("--token "),
            "{unit}: the token must come as a credential"
        );
    }
    // Exposure as systemd scores it (0-100; 25 reads "2.5 OK"), the same scale for each unit.
    for unit in instances {
        let o = run(
            "systemd-analyze",
            "systemd",
            &[
                "security",
                "--offline=yes",
                "--threshold=25",
                "--no-pager",
                unit,
            ],
            dir.path(),
        );
        assert!(o.status.success(), "{unit} is too exposed:\n{}", text(&o));
    }

    // The check can fail: a misspelled directive is a warning, caught above as output.
    let unit = dir.path().join("latentsweep-coordinator.service");
    let body = std::fs::read_to_string(&unit).unwrap();
    std::fs::write(
        &unit,
        body.replace("ProtectSystem=strict", "ProtectSytem=strict"),
    )
    .unwrap();
    let o = verify(dir.path(), &["./latentsweep-coordinator.service"]);
    assert!(text(&o).contains("Unknown key"), "{}", text(&o));
}

const VALIDATE: &str = "kubernetes-validate";
const VALIDATE_PKG: &str = "the PyPI package kubernetes-validate";

fn validate_strict(files: &[PathBuf]) -> Output {
    let mut args = vec!["--strict", "--quiet"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    run(VALIDATE, VALIDATE_PKG, &args, &root())
}

fn k8s_manifests(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            k8s_manifests(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml")
            && path.file_name().unwrap() != "kustomization.yaml"
        {
            out.push(path);
        }
    }
}

/// `kubectl kustomize DIR`, written to `out`.
fn render(kustomization: &str, out: &Path) -> String {
    let o = run(
        "kubectl",
        "kubectl (Debian package kubectl or kubernetes-client)",
        &["kustomize", kustomization],
        &root(),
    );
    assert!(
        o.status.success(),
        "kubectl kustomize {kustomization}:\n{}",
        text(&o)
    );
    std::fs::write(out, &o.stdout).unwrap();
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn kubernetes_manifests_and_their_kustomizations_validate_strictly() {
    let mut files = Vec::new();
    k8s_manifests(&root().join("deploy/k8s"), &mut files);
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    let o = validate_strict(&files);
    assert!(o.status.success(), "{}", text(&o));

    let dir = tempfile::tempdir().unwrap();
    let gpu_file = dir.path().join("gpu.yaml");
    let cpu_file = dir.path().join("cpu.yaml");
    let gpu = render("deploy/k8s", &gpu_file);
    let cpu = render("deploy/k8s/cpu", &cpu_file);
    let o = validate_strict(&[gpu_file, cpu_file]);
    assert!(o.status.success(), "{}", text(&o));

    for (name, rendered) in [("gpu", &gpu), ("cpu", &cpu)] {
        for needed in [
            "kind: StatefulSet",
            "volumeClaimTemplates:",
            "kind: Service",
            "kind: Deployment",
            "secretName: latentsweep-token",
            "secretName: latentsweep-tls",
            "--token-file=",
            "--tls-cert=",
            "--ca-cert=",
            &format!("path: {HEALTHZ}"),
            &format!("path: {READYZ}"),
            "namespace: latentsweep",
        ] {
            assert!(rendered.contains(needed), "{name}: no `{needed}`");
        }
    }
    assert!(gpu.contains("nvidia.com/gpu: 1") && gpu.contains("--devices=0"));
    assert!(!cpu.contains("nvidia.com/gpu") && cpu.contains("- --cpu"));
}

#[test]
fn a_misspelled_kubernetes_field_fails_strict_validation() {
    let dir = tempfile::tempdir().unwrap();
    let good =
        std::fs::read_to_string(root().join("deploy/k8s/coordinator/statefulset.yaml")).unwrap();
    let bad = dir.path().join("statefulset.yaml");
    // An optional field, misspelled: without --strict it would be dropped without a word.
    let (right, wrong) = (
        "readOnlyRootFilesystem: true",
        "readOnlyRootFileSystem: true",
    );
    assert!(good.contains(right));
    std::fs::write(&bad, good.replace(right, wrong)).unwrap();
    let o = validate_strict(std::slice::from_ref(&bad));
    assert!(!o.status.success(), "accepted:\n{}", text(&o));
    assert!(
        text(&o).contains("'readOnlyRootFileSystem' was unexpected"),
        "{}",
        text(&o)
    );
    let lax = run(
        VALIDATE,
        VALIDATE_PKG,
        &["--quiet", bad.to_str().unwrap()],
        &root(),
    );
    assert!(lax.status.success(), "{}", text(&lax));
}

#[test]
fn the_kubernetes_example_sweep_is_a_valid_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .arg("submit")
        .arg(root().join("deploy/k8s/coordinator/sweeps/example.toml"))
        .arg("--db")
        .arg(dir.path().join("ls.db"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["sweep"], "k8s-example");
    assert_eq!(v["created"], 8, "4 losses x 2 seeds: {v}");
}
