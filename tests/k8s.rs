//! deploy/k8s as a cluster would receive it: rendered by `kubectl kustomize` (the base and the mutual TLS
//! overlay), every object validated strictly against a pinned Kubernetes schema, and what users rely on
//! checked in the rendered objects: the election group's StatefulSet, the same services, variables,
//! ports and clock offsets as docker-compose.yml, variables and flags the binaries really have, the
//! image's unprivileged user, and each pod's own certificate under TLS.
//!
//! No cluster runs here: nothing in this file starts a pod.
//!
//! Needs kubectl (1.32 here) and `kubernetes-validate` from PyPI at the pinned version (scripts/test
//! installs it). Without them the tests say so and skip, except under CI (`CI=true`), where a missing
//! tool is a failure.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{ok, require};
use serde_json::{Value, json};

/// The `kubernetes-validate` release whose schemas the manifests are checked against (scripts/test
/// installs exactly this one).
const KUBERNETES_VALIDATE: &str = "1.37.0";
/// The Kubernetes version the manifests are validated for: the kubectl installed here.
const KUBERNETES: &str = "1.32.0";
/// The image's user and group (Dockerfile and docker/offline.Dockerfile: `USER 65534:65534`).
const IMAGE_USER: i64 = 65534;
/// The election node's platform interface: its id from the pod name, its members from DNS.
const PLATFORM_INTERFACE: [&str; 2] = ["SYNCLAB_ID_FROM_NAME", "SYNCLAB_DISCOVER"];

/// Runs `cmd` with `input` on its standard input.
fn with_input(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// kubectl and the pinned kubernetes-validate are there, or the test skips (or fails under CI).
fn tools_available() -> bool {
    let kubectl = Command::new("kubectl").args(["version", "--client"]).output().is_ok_and(|o| o.status.success());
    if !require(kubectl, "kubectl") {
        return false;
    }
    let version = Command::new("python3").args(["-m", "kubernetes_validate", "--version"]).output();
    let version = version.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    require(version == KUBERNETES_VALIDATE, &format!("kubernetes-validate {KUBERNETES_VALIDATE} (found {version:?})"))
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// YAML documents as JSON values (PyYAML comes with kubernetes-validate), the empty ones left out.
fn yaml_to_json(yaml: &str) -> Vec<Value> {
    let out = with_input(
        Command::new("python3")
            .args(["-c", "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)"]),
        yaml,
    );
    assert!(out.status.success(), "YAML did not parse: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The objects as YAML documents (JSON is YAML).
fn json_to_yaml(objects: &[Value]) -> String {
    objects.iter().map(|o| format!("---\n{o}\n")).collect()
}

/// What `kubectl kustomize` rendered.
struct Rendered {
    yaml: String,
    objects: Vec<Value>,
}

impl Rendered {
    fn of(dir: &Path) -> Self {
        let yaml = ok(Command::new("kubectl").arg("kustomize").arg(dir));
        let objects = yaml_to_json(&yaml);
        assert!(!objects.is_empty(), "{} rendered nothing", dir.display());
        Self { yaml, objects }
    }

    fn base() -> Self {
        Self::of(&root().join("deploy/k8s"))
    }

    fn find(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", self.names()))
    }

    fn names(&self) -> Vec<String> {
        self.objects
            .iter()
            .map(|o| format!("{}/{}", o["kind"].as_str().unwrap_or("?"), o["metadata"]["name"].as_str().unwrap_or("?")))
            .collect()
    }

    /// Every Deployment and StatefulSet.
    fn workloads(&self) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet").collect()
    }

    /// The data of the ConfigMap an `envFrom` names.
    fn config_map(&self, name: &str) -> &serde_json::Map<String, Value> {
        self.find("ConfigMap", name)["data"].as_object().unwrap()
    }

    /// A container's environment as name -> value: `envFrom` ConfigMaps first, then `env` (a value from
    /// the downward API as `fieldRef:PATH`).
    fn env(&self, container: &Value) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for from in container["envFrom"].as_array().into_iter().flatten() {
            let name = from["configMapRef"]["name"].as_str().expect("only ConfigMaps feed envFrom");
            env.extend(self.config_map(name).iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())));
        }
        for var in container["env"].as_array().into_iter().flatten() {
            let value = match (&var["value"], &var["valueFrom"]["fieldRef"]["fieldPath"]) {
                (Value::String(v), _) => v.clone(),
                (_, Value::String(path)) => format!("fieldRef:{path}"),
                _ => panic!("a variable without a value: {var}"),
            };
            env.insert(var["name"].as_str().unwrap().to_string(), value);
        }
        env
    }
}

fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

fn containers(workload: &Value) -> &Vec<Value> {
    pod_spec(workload)["containers"].as_array().unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// `kubernetes-validate --strict` on `yaml` for the pinned Kubernetes version: the number of objects
/// that passed, or everything it said when any object did not pass or had no schema to check it by.
fn validate(yaml: &str) -> Result<usize, String> {
    let out = with_input(Command::new("python3").args(["-m", "kubernetes_validate", "--strict", "-k", KUBERNETES, "-"]), yaml);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // A kind or version without a schema is only a warning to kubernetes-validate: here it is refused.
    let passed = said.lines().filter(|l| l.starts_with("INFO ") && l.contains(" passed for resource ")).count();
    let refused = said.lines().any(|l| !l.starts_with("INFO "));
    if out.status.success() && !refused { Ok(passed) } else { Err(said) }
}

/// Every object of `rendered` passes strict validation, one by one.
fn assert_valid(rendered: &Rendered) {
    match validate(&rendered.yaml) {
        Ok(passed) => assert_eq!(passed, rendered.objects.len(), "not every object was validated: {:?}", rendered.names()),
        Err(said) => panic!("the manifests do not validate against Kubernetes {KUBERNETES}:\n{said}"),
    }
}

/// A copy of deploy/ in a folder of its own, removed when dropped (kustomize reads a base only by a
/// relative path, and the overlay's certificates only from inside it).
struct Copy {
    dir: PathBuf,
}

impl Copy {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("synclab-k8s-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(&root().join("deploy"), &dir.join("deploy"));
        Self { dir }
    }
}

impl Copy {
    /// Where the copy's overlay reads its certificates.
    fn certs(&self) -> PathBuf {
        self.dir.join("deploy/k8s/overlays/mtls/certs")
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The mutual TLS overlay rendered from a copy of deploy/ in which the real `synclab certs` made the
/// certificates where the overlay reads them (they stay while the copy does).
fn with_certs(what: &str) -> (Copy, Rendered) {
    let copy = Copy::new(what);
    let overlay = copy.certs().parent().unwrap().to_path_buf();
    ok(Command::new(env!("CARGO_BIN_EXE_synclab")).arg("certs").arg("--out").arg(copy.certs()));
    let rendered = Rendered::of(&overlay);
    (copy, rendered)
}

fn render_mtls(what: &str) -> Rendered {
    with_certs(what).1
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            // Certificates someone made in the tree stay there: the test makes its own.
            if entry.file_name() != "certs" {
                copy_dir(&entry.path(), &to.join(entry.file_name()));
            }
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn the_base_renders_and_every_object_validates_strictly() {
    if !tools_available() {
        return;
    }
    let rendered = Rendered::base();
    assert_valid(&rendered);
    let kinds: BTreeSet<&str> = rendered.objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    for kind in ["Namespace", "ConfigMap", "Deployment", "StatefulSet", "Service", "PodDisruptionBudget"] {
        assert!(kinds.contains(kind), "no {kind} rendered: {kinds:?}");
    }
    // Every namespaced object is in the lab's namespace, which the base creates.
    for object in rendered.objects.iter().filter(|o| o["kind"] != "Namespace") {
        assert_eq!(object["metadata"]["namespace"], "synclab", "{}", object["metadata"]["name"]);
    }
    assert_eq!(rendered.find("Namespace", "synclab")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
}

#[test]
fn the_mtls_overlay_renders_and_every_object_validates_strictly() {
    if !tools_available() {
        return;
    }
    assert_valid(&render_mtls("validate"));
}

#[test]
fn strict_validation_refuses_broken_objects() {
    if !tools_available() {
        return;
    }
    let good = Rendered::base().objects;
    let statefulset = good.iter().position(|o| o["kind"] == "StatefulSet").unwrap();
    let pdb = good.iter().position(|o| o["kind"] == "PodDisruptionBudget").unwrap();
    type Break = fn(&mut Value);
    // What is broken, in which object, how, and what its refusal must mention (empty: the object's name;
    // a kind without a schema is refused by its kind and version only).
    let broken: [(&str, usize, Break, &str); 5] = [
        (
            "a misspelt field (only strict validation sees it)",
            statefulset,
            |s| {
                s["spec"]["podManagmentPolicy"] = json!("Parallel");
            },
            "",
        ),
        (
            "a probe's port given as a name (gRPC probes take a number)",
            statefulset,
            |s| {
                s["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = json!("grpc");
            },
            "",
        ),
        (
            "replicas as a string",
            statefulset,
            |s| {
                s["spec"]["replicas"] = json!("5");
            },
            "",
        ),
        (
            "a container without a name",
            statefulset,
            |s| {
                s["spec"]["template"]["spec"]["containers"][0].as_object_mut().unwrap().remove("name");
            },
            "",
        ),
        // Removed in Kubernetes 1.25: no schema of the pinned version knows it.
        (
            "an API version the pinned Kubernetes no longer serves",
            pdb,
            |p| {
                p["apiVersion"] = json!("policy/v1beta1");
            },
            "PodDisruptionBudget with api version policy/v1beta1",
        ),
    ];
    assert_eq!(validate(&json_to_yaml(&good)), Ok(good.len()), "the unbroken objects must pass");
    // Each broken copy, under a name of its own, next to the good objects in one run: each is refused,
    // by name, and nothing else is.
    let mut objects = good.clone();
    let mut names = Vec::new();
    for (n, (what, index, breaks, mention)) in broken.into_iter().enumerate() {
        let mut object = good[index].clone();
        breaks(&mut object);
        let name = format!("broken-{n}");
        object["metadata"]["name"] = json!(name);
        objects.push(object);
        names.push((what, if mention.is_empty() { format!("/{name} ") } else { mention.to_string() }));
    }
    let said = validate(&json_to_yaml(&objects)).expect_err("broken objects accepted");
    let refusals: Vec<&str> = said.lines().filter(|l| !l.starts_with("INFO ")).collect();
    for (what, mention) in &names {
        assert!(refusals.iter().any(|l| l.contains(mention.as_str())), "{what}: not refused:\n{said}");
    }
    assert_eq!(refusals.len(), names.len(), "only the broken objects must be refused:\n{said}");
}

#[test]
fn the_election_group_is_a_statefulset_users_can_rely_on() {
    if !tools_available() {
        return;
    }
    let rendered = Rendered::base();
    let set = rendered.find("StatefulSet", "election");
    let spec = &set["spec"];
    assert_eq!(spec["podManagementPolicy"], "Parallel");
    assert_eq!(spec["replicas"], 5, "five members, as in compose");
    let labels = &spec["template"]["metadata"]["labels"];
    let selects = |selector: &Value| selector.as_object().unwrap().iter().all(|(k, v)| &labels[k] == v);
    assert!(selects(&spec["selector"]["matchLabels"]));

    // The headless Service the set is governed by lists every member, ready or not.
    let service = rendered.find("Service", spec["serviceName"].as_str().unwrap());
    assert_eq!(service["spec"]["clusterIP"], "None", "the governing Service must be headless");
    assert_eq!(service["spec"]["publishNotReadyAddresses"], true);
    assert!(selects(&service["spec"]["selector"]));

    // At most one member down at a time for a voluntary disruption.
    let pdb = rendered.objects.iter().find(|o| o["kind"] == "PodDisruptionBudget" && selects(&o["spec"]["selector"]["matchLabels"]));
    let pdb = pdb.expect("no PodDisruptionBudget selects the election pods");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);

    // Spread over the nodes: a topology spread or an anti-affinity on the node's host name, for these pods.
    let pod = pod_spec(set);
    let spread = pod["topologySpreadConstraints"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["topologyKey"] == "kubernetes.io/hostname" && selects(&c["labelSelector"]["matchLabels"]));
    let anti = !pod["affinity"]["podAntiAffinity"].is_null();
    assert!(spread || anti, "the members are not spread over nodes: {pod}");

    // The node's id from its pod name, its members from the headless Service's name and the port it serves.
    let [container] = &containers(set)[..] else { panic!("one container expected") };
    let env = rendered.env(container);
    assert_eq!(env["SYNCLAB_ID_FROM_NAME"], "fieldRef:metadata.name");
    let port = container["ports"].as_array().unwrap().iter().find(|p| p["name"] == "grpc").unwrap()["containerPort"].as_i64().unwrap();
    assert_eq!(env["SYNCLAB_DISCOVER"], format!("{}:{port}", service["metadata"]["name"].as_str().unwrap()));
    assert!(service["spec"]["ports"].as_array().unwrap().iter().any(|p| p["port"] == port), "the headless Service lacks port {port}");
    assert!(!env.contains_key("SYNCLAB_ID") && !env.contains_key("SYNCLAB_PEERS"), "a hand-written id or peer list: {env:?}");

    // Both probes ask grpc.health.v1 on the port the node serves (the server as a whole: readiness is
    // "serving", never "is the coordinator", which has no health service of its own to ask).
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["grpc"]["port"], port, "{probe}: {}", container[probe]);
        assert!(container[probe]["grpc"]["service"].as_str().unwrap_or("").is_empty(), "{probe}: {}", container[probe]);
    }

    // The term is kept on a volume of the pod's own claim, where SYNCLAB_STATE_DIR says.
    let mount = container["volumeMounts"].as_array().unwrap().iter().find(|m| m["mountPath"] == env["SYNCLAB_STATE_DIR"].as_str());
    let mount = mount.unwrap_or_else(|| panic!("SYNCLAB_STATE_DIR {} is not a mounted volume", env["SYNCLAB_STATE_DIR"]));
    assert!(
        spec["volumeClaimTemplates"].as_array().unwrap().iter().any(|c| c["metadata"]["name"] == mount["name"]),
        "the state volume is not a claim of the pod's own"
    );
}

/// A compose value with its `${VAR:-default}` parts resolved to their defaults.
fn compose_default(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        let (_, default) = rest[start + 2..end].split_once(":-").unwrap_or(("", ""));
        out.push_str(default);
        rest = &rest[end + 1..];
    }
    out + rest
}

/// docker-compose.yml's services, parsed.
fn compose(file: &str) -> serde_json::Map<String, Value> {
    let yaml = std::fs::read_to_string(root().join(file)).unwrap();
    yaml_to_json(&yaml).remove(0)["services"].as_object().unwrap().clone()
}

fn compose_env(service: &Value) -> BTreeMap<String, String> {
    let env = service["environment"].as_object().unwrap();
    env.iter().map(|(k, v)| (k.clone(), compose_default(v.as_str().unwrap_or(&v.to_string())))).collect()
}

/// The container ports a compose service publishes, as (port, protocol).
fn compose_ports(service: &Value) -> BTreeSet<(i64, String)> {
    strings(&service["ports"])
        .iter()
        .map(|p| {
            let inside = p.rsplit(':').next().unwrap();
            let (port, protocol) = inside.split_once('/').unwrap_or((inside, "tcp"));
            (port.parse().unwrap(), protocol.to_ascii_uppercase())
        })
        .collect()
}

fn container_ports(container: &Value) -> BTreeSet<(i64, String)> {
    let ports = container["ports"].as_array().unwrap().iter();
    ports.map(|p| (p["containerPort"].as_i64().unwrap(), p["protocol"].as_str().unwrap_or("TCP").to_string())).collect()
}

/// The compose services Kubernetes does not run (the dashboard's node list is compose's own).
const NOT_DEPLOYED: [&str; 1] = ["dashboard"];

#[test]
fn every_service_runs_as_compose_runs_it() {
    if !tools_available() {
        return;
    }
    let rendered = Rendered::base();
    let services = compose("docker-compose.yml");
    let members: Vec<&String> = services.keys().filter(|name| name.starts_with("node-")).collect();
    let set = rendered.find("StatefulSet", "election");
    assert_eq!(set["spec"]["replicas"], members.len());
    let mut deployed = BTreeSet::new();
    for (name, service) in services.iter().filter(|(name, _)| !NOT_DEPLOYED.contains(&name.as_str())) {
        let member = name.starts_with("node-");
        let workload = if member { set } else { rendered.find("Deployment", name) };
        deployed.insert(workload["metadata"]["name"].as_str().unwrap());
        let [container] = &containers(workload)[..] else { panic!("{name}: one container expected") };

        // The same variables with the same values (so the same clock offsets and drifts), but for the
        // id and the peer list, which an election member learns from the platform instead.
        let mut want = compose_env(service);
        let mut got = rendered.env(container);
        if member {
            assert!(want.remove("SYNCLAB_ID").is_some() && want.remove("SYNCLAB_PEERS").is_some());
            for name in PLATFORM_INTERFACE {
                got.remove(name).unwrap_or_else(|| panic!("election: {name} missing"));
            }
        }
        assert_eq!(got, want, "{name}: the environment differs from compose's");

        // The same program, arguments and container ports.
        assert_eq!(strings(&container["command"]), strings(&service["entrypoint"]), "{name}: entrypoint");
        assert_eq!(strings(&container["args"]), strings(&service["command"]), "{name}: command");
        assert_eq!(container_ports(container), compose_ports(service), "{name}: ports");

        // A Service of the compose service's name (the name the others dial, and under TLS the name its
        // certificate carries) selects the pod and serves every port; election members share one.
        let service_name = if member { set["spec"]["serviceName"].as_str().unwrap() } else { name.as_str() };
        let k8s_service = rendered.find("Service", service_name);
        let labels = &workload["spec"]["template"]["metadata"]["labels"];
        assert!(k8s_service["spec"]["selector"].as_object().unwrap().iter().all(|(k, v)| &labels[k] == v), "{name}: not selected");
        for (port, protocol) in container_ports(container) {
            let served = k8s_service["spec"]["ports"].as_array().unwrap().iter().any(|p| {
                p["port"] == port && p["protocol"].as_str().unwrap_or("TCP") == protocol && {
                    let target = &p["targetPort"];
                    target == port
                        || container["ports"].as_array().unwrap().iter().any(|c| &c["name"] == target && c["containerPort"] == port)
                }
            });
            assert!(served, "{name}: Service {service_name} does not serve {port}/{protocol}");
        }
    }
    let workloads: BTreeSet<&str> = rendered.workloads().iter().map(|w| w["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(workloads, deployed, "workloads compose does not have, or compose services without one");
}

/// The `--help` of the program a container runs: its command's binary, or the image's entrypoint
/// (`synclab`) with the subcommand its arguments start with.
fn help(container: &Value, command: &[String]) -> String {
    let (binary, subcommand) = match command.first() {
        Some(path) => (path.rsplit('/').next().unwrap().to_string(), None),
        None => ("synclab".to_string(), strings(&container["args"]).into_iter().next()),
    };
    let exe = match binary.as_str() {
        "synclab" => env!("CARGO_BIN_EXE_synclab"),
        "time-server" => env!("CARGO_BIN_EXE_time-server"),
        "berkeley-master" => env!("CARGO_BIN_EXE_berkeley-master"),
        "berkeley-slave" => env!("CARGO_BIN_EXE_berkeley-slave"),
        "election-node" => env!("CARGO_BIN_EXE_election-node"),
        other => panic!("a container runs {other}, which the image does not have"),
    };
    ok(Command::new(exe).args(subcommand).arg("--help").env_remove("RUST_LOG"))
}

/// Every `--flag` in `args` is one `help` lists.
fn assert_flags(args: &[String], help: &str, what: &str) {
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(help.contains(&format!("{flag} ")), "{what}: {flag} is not a flag of the program:\n{help}");
    }
}

/// Every variable a container is given is one its program reads, and every flag in its arguments and
/// its exec probes is one it has, asked of the binaries this build made.
fn assert_env_and_flags_exist(rendered: &Rendered) {
    for workload in rendered.workloads() {
        let name = workload["metadata"]["name"].as_str().unwrap();
        for container in containers(workload) {
            let program_help = help(container, &strings(&container["command"]));
            for var in rendered.env(container).keys() {
                assert!(
                    program_help.contains(&format!("[env: {var}=")),
                    "{name}: {var} is not a variable the program reads:\n{program_help}"
                );
            }
            assert_flags(&strings(&container["args"]), &program_help, name);
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                let command = strings(&container[probe]["exec"]["command"]);
                if let [program, rest @ ..] = &command[..] {
                    let probe_help = help(&json!({ "args": rest }), &[]);
                    assert_eq!(program, "/usr/local/bin/synclab", "{name}: {probe} runs {program}");
                    assert_flags(rest, &probe_help, &format!("{name} {probe}"));
                }
            }
        }
    }
}

#[test]
fn every_variable_and_flag_is_one_the_binaries_have() {
    if !tools_available() {
        return;
    }
    assert_env_and_flags_exist(&Rendered::base());
    assert_env_and_flags_exist(&render_mtls("flags"));
}

#[test]
fn the_checks_of_variables_and_flags_bite() {
    if !tools_available() {
        return;
    }
    let good = Rendered::base();
    let mut wrong_var = Rendered { yaml: String::new(), objects: good.objects.clone() };
    let i = wrong_var.objects.iter().position(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "kmc").unwrap();
    wrong_var.objects[i]["spec"]["template"]["spec"]["containers"][0]["env"][0]["name"] = json!("SYNCLAB_NAMES");
    let mut wrong_flag = Rendered { yaml: String::new(), objects: good.objects.clone() };
    let i = wrong_flag.objects.iter().position(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "mobile").unwrap();
    wrong_flag.objects[i]["spec"]["template"]["spec"]["containers"][0]["args"][1] = json!("--devices");
    for (what, rendered) in [("SYNCLAB_NAMES", wrong_var), ("--devices", wrong_flag)] {
        let caught = std::panic::catch_unwind(|| assert_env_and_flags_exist(&rendered));
        assert!(caught.is_err(), "{what} was taken for one the binary has");
    }
}

#[test]
fn every_pod_runs_as_the_images_user_without_privileges() {
    if !tools_available() {
        return;
    }
    for dockerfile in ["Dockerfile", "docker/offline.Dockerfile"] {
        let text = std::fs::read_to_string(root().join(dockerfile)).unwrap();
        assert!(text.lines().any(|l| l == format!("USER {IMAGE_USER}:{IMAGE_USER}")), "{dockerfile}'s user is not {IMAGE_USER}");
    }
    let rendered = Rendered::base();
    for workload in rendered.workloads() {
        let name = workload["metadata"]["name"].as_str().unwrap();
        let pod = &pod_spec(workload)["securityContext"];
        assert_eq!(pod["runAsNonRoot"], true, "{name}");
        assert_eq!(pod["runAsUser"], IMAGE_USER, "{name}");
        assert_eq!(pod["runAsGroup"], IMAGE_USER, "{name}");
        assert_eq!(pod["fsGroup"], IMAGE_USER, "{name}: its volumes would not be the user's to write");
        assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        for container in containers(workload) {
            let security = &container["securityContext"];
            assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"], "{name}");
            assert!(security["privileged"].is_null() && security["capabilities"]["add"].is_null(), "{name}");
            assert!(
                !container["resources"]["requests"]["memory"].is_null() && !container["resources"]["limits"]["memory"].is_null(),
                "{name}"
            );
            assert_eq!(container["image"], "synclab:latest", "{name}");
            assert_eq!(container["imagePullPolicy"], "IfNotPresent", "{name}: a cluster without a registry could not start it");
        }
    }
}

#[test]
fn kustomize_images_replaces_the_image_everywhere() {
    if !tools_available() {
        return;
    }
    let copy = Copy::new("images");
    let dir = copy.dir.join("images");
    std::fs::create_dir_all(&dir).unwrap();
    let kustomization =
        "resources:\n  - ../deploy/k8s\nimages:\n  - name: synclab\n    newName: registry.example/synclab\n    newTag: \"0.1.0\"\n";
    std::fs::write(dir.join("kustomization.yaml"), kustomization).unwrap();
    let rendered = Rendered::of(&dir);
    for workload in rendered.workloads() {
        for container in containers(workload) {
            assert_eq!(container["image"], "registry.example/synclab:0.1.0", "{}", workload["metadata"]["name"]);
        }
    }
}

/// The value of `env[index]` with every `$(VAR)` in it replaced as the kubelet does: only variables
/// defined before it count, and one from the downward API is what the pod named `pod` gets.
fn expand(env: &[Value], index: usize, pod: &str) -> String {
    let mut out = env[index]["value"].as_str().unwrap().to_string();
    for var in &env[..index] {
        let reference = format!("$({})", var["name"].as_str().unwrap());
        if out.contains(&reference) {
            let resolved = match (&var["value"], &var["valueFrom"]["fieldRef"]["fieldPath"]) {
                (Value::String(v), _) => v.clone(),
                (_, Value::String(path)) if path == "metadata.name" => pod.to_string(),
                _ => panic!("{reference} cannot be resolved here"),
            };
            out = out.replace(&reference, &resolved);
        }
    }
    out
}

#[test]
fn the_mtls_overlay_gives_every_pod_its_own_certificate() {
    if !tools_available() {
        return;
    }
    let rendered = &render_mtls("certs");
    let secret = rendered.objects.iter().find(|o| o["kind"] == "Secret").expect("no Secret of certificates");
    let keys: BTreeSet<&str> = secret["data"].as_object().unwrap().keys().map(String::as_str).collect();
    assert!(!keys.iter().any(|k| k.starts_with("ca.key")), "the CA's key must not go into the cluster: {keys:?}");
    let tls = compose("docker-compose.tls.yml");

    for workload in rendered.workloads() {
        let name = workload["metadata"]["name"].as_str().unwrap();
        let pod = pod_spec(workload);
        // Every pod this workload makes: a Deployment's under its own name here, a StatefulSet's by ordinal.
        let pods: Vec<String> = match workload["kind"].as_str() {
            Some("StatefulSet") => (0..workload["spec"]["replicas"].as_i64().unwrap()).map(|i| format!("{name}-{i}")).collect(),
            _ => vec![name.to_string()],
        };
        for container in containers(workload) {
            let env = container["env"].as_array().unwrap();
            for (ordinal, pod_name) in pods.iter().enumerate() {
                // The compose service this pod stands for, and the certificate files compose gives it.
                let service = if workload["kind"] == "StatefulSet" { format!("node-{}", ordinal + 1) } else { name.to_string() };
                let compose_env = compose_env(&tls[&service]);
                for var in ["SYNCLAB_TLS_CA", "SYNCLAB_TLS_CERT", "SYNCLAB_TLS_KEY"] {
                    let index = env.iter().position(|v| v["name"] == var).unwrap_or_else(|| panic!("{name}: no {var}"));
                    let path = expand(env, index, pod_name);
                    assert!(!path.contains("$("), "{pod_name}: {var}={path} refers to a variable not defined before it");
                    // The file is in a mounted volume of the Secret, under a key named as compose's file.
                    let mount = container["volumeMounts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|m| path.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())));
                    let mount = mount.unwrap_or_else(|| panic!("{pod_name}: {var}={path} is in no mounted volume"));
                    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == mount["name"]).unwrap();
                    assert_eq!(volume["secret"]["secretName"], secret["metadata"]["name"], "{pod_name}: {var} is not from the Secret");
                    let file = path.strip_prefix(&format!("{}/", mount["mountPath"].as_str().unwrap())).unwrap();
                    let item = volume["secret"]["items"].as_array().unwrap().iter().find(|i| i["path"] == file);
                    let key =
                        item.unwrap_or_else(|| panic!("{pod_name}: {var}={path} is not a file of the volume"))["key"].as_str().unwrap();
                    assert!(keys.contains(key), "{pod_name}: the Secret has no {key}");
                    let compose_file = compose_env[var].rsplit('/').next().unwrap().to_string();
                    assert_eq!(key, compose_file, "{pod_name}: {var} is not the certificate compose gives {service}");
                }
            }
            // The kubelet's gRPC probe has no TLS: under TLS the probes are `synclab healthcheck` inside.
            for probe in ["readinessProbe", "livenessProbe"] {
                assert!(container[probe]["grpc"].is_null(), "{name}: a gRPC {probe} cannot pass under TLS");
            }
            let command = strings(&container["readinessProbe"]["exec"]["command"]);
            assert_eq!(command[..2], ["/usr/local/bin/synclab", "healthcheck"], "{name}");
        }
    }

    // Each member is reached under the name its certificate carries: a Service node-<id> selecting its pod,
    // and peers listed by those names.
    let set = rendered.find("StatefulSet", "election");
    let env = rendered.env(&containers(set)[0]);
    assert!(!env.contains_key("SYNCLAB_DISCOVER"), "discovered addresses are not names a certificate carries");
    for id in 1..=set["spec"]["replicas"].as_i64().unwrap() {
        let service = rendered.find("Service", &format!("node-{id}"));
        assert_eq!(service["spec"]["selector"]["statefulset.kubernetes.io/pod-name"], format!("election-{}", id - 1));
        assert!(env["SYNCLAB_PEERS"].split(',').any(|p| p == format!("{id}=node-{id}:50054")), "{}", env["SYNCLAB_PEERS"]);
    }
}

/// The environment the container of `workload` gets in the pod named `pod`, in order: `envFrom`
/// first, then `env` with downward-API values and `$(VAR)` references resolved as the kubelet does.
fn pod_env(rendered: &Rendered, workload: &Value, pod: &str) -> Vec<(String, String)> {
    let container = &containers(workload)[0];
    let mut vars: Vec<(String, String)> = Vec::new();
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let data = rendered.config_map(from["configMapRef"]["name"].as_str().unwrap());
        vars.extend(data.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())));
    }
    let env = container["env"].as_array().unwrap();
    for (index, var) in env.iter().enumerate() {
        let value = match &var["valueFrom"]["fieldRef"]["fieldPath"] {
            Value::String(path) if path == "metadata.name" => pod.to_string(),
            Value::Null => expand(env, index, pod),
            other => panic!("{other} is not known here"),
        };
        vars.push((var["name"].as_str().unwrap().to_string(), value));
    }
    vars
}

/// A child process killed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the real election-node with the environment the StatefulSet gives the pod `pod` (only where it
/// listens, whom it discovers, where it keeps its state and where its certificates are differ on this
/// host) and returns the id it reports in GetState.
fn id_taken(rendered: &Rendered, pod: &str, certs: Option<&Path>) -> i64 {
    let set = rendered.find("StatefulSet", "election");
    let state = std::env::temp_dir().join(format!("synclab-k8s-state-{}-{pod}", std::process::id()));
    std::fs::create_dir_all(&state).unwrap();
    let addr = format!("127.0.0.1:{}", common::free_port());
    let items =
        pod_spec(set)["volumes"].as_array().into_iter().flatten().flat_map(|v| v["secret"]["items"].as_array().into_iter().flatten());
    let files: BTreeMap<String, String> =
        items.map(|i| (format!("/certs/{}", i["path"].as_str().unwrap()), i["key"].as_str().unwrap().to_string())).collect();
    let mut env = pod_env(rendered, set, pod);
    for (name, value) in &mut env {
        match name.as_str() {
            "SYNCLAB_LISTEN" => *value = addr.clone(),
            // The headless Service's name exists only in a cluster: here the node discovers itself, by
            // address, so no name is looked up outside this host.
            "SYNCLAB_DISCOVER" => *value = addr.clone(),
            "SYNCLAB_METRICS_LISTEN" => *value = format!("127.0.0.1:{}", common::free_port()),
            "SYNCLAB_STATE_DIR" => *value = state.display().to_string(),
            // The file the pod would read at /certs/PATH is the Secret's KEY, made here in `certs`.
            _ if name.starts_with("SYNCLAB_TLS_") => {
                let key = files.get(value.as_str()).unwrap_or_else(|| panic!("{pod}: {name}={value} is no file of the Secret"));
                *value = certs.expect("certificates").join(key).display().to_string();
            }
            _ => {}
        }
    }
    let log = state.join("log");
    let stderr = std::fs::File::create(&log).unwrap();
    let node = Command::new(env!("CARGO_BIN_EXE_election-node")).env_clear().envs(env).stdout(Stdio::null()).stderr(stderr).spawn();
    let mut node = Running(node.unwrap());
    // As the observer, under TLS (a certificate valid for 127.0.0.1).
    let observer: Vec<String> = certs
        .map(|dir| ["ca.pem", "observer.pem", "observer.key"].iter().map(|f| dir.join(f).display().to_string()).collect())
        .unwrap_or_default();
    let tls_args = |cmd: &mut Command| {
        if let [ca, cert, key] = &observer[..] {
            cmd.args(["--tls-ca", ca, "--tls-cert", cert, "--tls-key", key]);
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let id = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("{pod}: election-node exited ({status}) with the StatefulSet's environment:\n{log}");
        }
        let mut status = Command::new(env!("CARGO_BIN_EXE_synclab"));
        status.args(["election", "status", "--json", "--nodes", &addr]).env_clear();
        tls_args(&mut status);
        let out = common::run(&mut status);
        let answer: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        if let Some(id) = answer.as_ref().and_then(|a| a["id"].as_i64()) {
            break id;
        }
        assert!(std::time::Instant::now() < deadline, "{pod}: no state from election-node within 20 s: {answer:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    drop(node);
    let _ = std::fs::remove_dir_all(&state);
    id
}

#[test]
fn the_election_node_takes_the_id_the_pod_name_gives_it() {
    if !tools_available() {
        return;
    }
    // Plaintext with discovery, and a member added by scaling to seven.
    let base = Rendered::base();
    for (pod, id) in [("election-0", 1), ("election-3", 4), ("election-6", 7)] {
        assert_eq!(id_taken(&base, pod, None), id, "{pod}");
    }
    // Mutual TLS: the peers listed by name, and the pod's own certificate from the Secret, which the
    // node loads and checks at start (a certificate and key that do not match, or another CA's, stop it).
    let (copy, mtls) = with_certs("id");
    assert_eq!(id_taken(&mtls, "election-3", Some(&copy.certs())), 4);
}
