//! Three network namespaces joined pairwise: one veth pair per pair of nodes, so any one
//! link can go down on its own (a non-transitive partition: virginia–tokyo cut while both
//! still reach frankfurt), plus a veth from the root namespace to each node for HTTP, so the
//! test reaches every node whatever is cut. Addresses are in 10.233.0.0/16 and 10.234.0.0/16
//! and exist only inside these namespaces. Dropping it deletes everything it made.

use super::cluster::ip;

/// The namespaces and their links.
pub struct Mesh {
    prefix: String,
    octet: u32,
    /// The namespaces' names, one per node.
    pub ns: Vec<String>,
    n: usize,
}

const PREFIX: &str = "mrm";

/// The index of the link between `i` and `j` (`i != j`, both below 3).
fn pair(i: usize, j: usize) -> usize {
    let (a, b) = (i.min(j), i.max(j));
    match (a, b) {
        (0, 1) => 0,
        (0, 2) => 1,
        _ => 2,
    }
}

impl Mesh {
    /// Three namespaces, or why not (not root, no `ip`, no netns support).
    pub fn setup() -> Result<Mesh, String> {
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            })
            .unwrap_or_default();
        if uid != "0" {
            return Err(format!("uid {uid:?} is not root"));
        }
        Self::remove_stale();
        let pid = std::process::id();
        let prefix = format!("{PREFIX}{pid}");
        let used = ip(&["-o", "-4", "addr", "show"])?;
        let mut octet = pid % 200;
        while used.contains(&format!("10.233.{octet}."))
            || used.contains(&format!("10.234.{octet}."))
        {
            octet = (octet + 1) % 200;
        }
        let mut mesh = Mesh {
            prefix: prefix.clone(),
            octet,
            ns: Vec::new(),
            n: 3,
        };
        let first = format!("{prefix}a");
        ip(&["netns", "add", &first])?;
        mesh.ns.push(first);
        let must = |args: &[&str]| {
            ip(args).unwrap_or_else(|e| panic!("setting up the mesh: {e}"));
        };
        for i in 1..3 {
            let ns = format!("{prefix}{}", (b'a' + i as u8) as char);
            must(&["netns", "add", &ns]);
            mesh.ns.push(ns);
        }
        for i in 0..3 {
            let ns = mesh.ns[i].clone();
            must(&["-n", &ns, "link", "set", "lo", "up"]);
            // HTTP: a /30 between the root namespace and the node.
            let l = (b'a' + i as u8) as char;
            let (h, k) = (format!("{prefix}h{l}"), format!("{prefix}k{l}"));
            must(&["link", "add", &h, "type", "veth", "peer", "name", &k]);
            must(&["link", "set", &k, "netns", &ns]);
            must(&[
                "addr",
                "add",
                &format!("10.234.{octet}.{}/30", 4 * i + 1),
                "dev",
                &h,
            ]);
            must(&["link", "set", &h, "up"]);
            must(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/30", mesh.http_ip(i)),
                "dev",
                &k,
            ]);
            must(&["-n", &ns, "link", "set", &k, "up"]);
        }
        for (i, j) in [(0, 1), (0, 2), (1, 2)] {
            // One veth pair per link, named after its ends, in a /30 of its own.
            let (a, b) = (mesh.link_name(i, j), mesh.link_name(j, i));
            must(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
            must(&["link", "set", &a, "netns", &mesh.ns[i]]);
            must(&["link", "set", &b, "netns", &mesh.ns[j]]);
            for (x, y, name) in [(i, j, &a), (j, i, &b)] {
                let cidr = format!("{}/30", mesh.peer_ip(x, y));
                must(&["-n", &mesh.ns[x], "addr", "add", &cidr, "dev", name]);
                must(&["-n", &mesh.ns[x], "link", "set", name, "up"]);
            }
        }
        Ok(mesh)
    }

    /// The interface in `i`'s namespace that leads to `j`.
    fn link_name(&self, i: usize, j: usize) -> String {
        format!("{}l{i}{j}", self.prefix)
    }

    /// Node `i`'s address on its link to `j`: what `j` dials to reach `i`.
    pub fn peer_ip(&self, i: usize, j: usize) -> String {
        let p = pair(i, j);
        let host = if i < j { 1 } else { 2 };
        format!("10.233.{}.{}", self.octet, 4 * p + host)
    }

    /// Node `i`'s HTTP address (reachable from the root namespace).
    pub fn http_ip(&self, i: usize) -> String {
        format!("10.234.{}.{}", self.octet, 4 * i + 2)
    }

    /// Takes the link between `i` and `j` down, at both ends.
    pub fn cut(&self, i: usize, j: usize) {
        for (x, y) in [(i, j), (j, i)] {
            ip(&[
                "-n",
                &self.ns[x],
                "link",
                "set",
                &self.link_name(x, y),
                "down",
            ])
            .unwrap();
        }
    }

    /// Brings the link between `i` and `j` back up, at both ends.
    pub fn heal(&self, i: usize, j: usize) {
        for (x, y) in [(i, j), (j, i)] {
            ip(&[
                "-n",
                &self.ns[x],
                "link",
                "set",
                &self.link_name(x, y),
                "up",
            ])
            .unwrap();
        }
    }

    /// Cuts every link of node `i`.
    pub fn isolate(&self, i: usize) {
        for j in (0..self.n).filter(|j| *j != i) {
            self.cut(i, j);
        }
    }

    /// Brings every link up.
    pub fn heal_all(&self) {
        for (i, j) in [(0, 1), (0, 2), (1, 2)] {
            self.heal(i, j);
        }
    }

    /// Deletes namespaces named `mrm<pid>…` whose process is gone.
    fn remove_stale() {
        if let Ok(list) = ip(&["netns", "list"]) {
            for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
                let Some(rest) = name.strip_prefix(PREFIX) else {
                    continue;
                };
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if !digits.is_empty() && !std::path::Path::new(&format!("/proc/{digits}")).exists()
                {
                    eprintln!("removing stale network namespace {name}");
                    let _ = ip(&["netns", "del", name]);
                }
            }
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and so the pairs.
        for ns in &self.ns {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}
