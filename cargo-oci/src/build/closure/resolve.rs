//! The breadth-first search itself: each executable resolved as its own process would resolve
//! it (its own `RPATH` chain), libraries found once per name or `DT_SONAME`, results merged by
//! image path.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use super::elf::*;
use super::ldcache::LdCache;
use super::paths::*;
use super::*;

/// One loaded object during resolution of one executable.
pub(super) struct Node {
    image_path: String,
    /// The host path as the search produced it (the base of its `$ORIGIN`).
    search_path: PathBuf,
    /// The host path to read.
    host_path: PathBuf,
    info: ElfInfo,
    /// The object whose request loaded this one (`l_loader`).
    loader: Option<usize>,
    name: String,
    needed_by: String,
    found_via: FoundVia,
    relocated_from: Option<String>,
}

/// A place to look for a library.
pub(super) struct Candidate {
    image_path: String,
    search_path: PathBuf,
    via: FoundVia,
    from_cache: bool,
}

pub(super) struct Resolver<'a> {
    opts: &'a ClosureOptions,
    sysroot_is_root: bool,
    cache: Option<LdCache>,
    infos: HashMap<PathBuf, ElfInfo>,
}

/// Resolves the closure of `executables` (see the module documentation).
pub fn resolve(executables: &[Executable], opts: &ClosureOptions) -> Result<Closure, ClosureError> {
    let sysroot_is_root = opts.sysroot.as_os_str().is_empty()
        || (opts.sysroot.has_root()
            && opts
                .sysroot
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::CurDir)));
    let mut resolver = Resolver {
        opts,
        sysroot_is_root,
        cache: None,
        infos: HashMap::new(),
    };
    if let Some(path) = &opts.ld_cache {
        let host = resolver.open_path(path);
        resolver.cache = LdCache::load(&host).map_err(|source| ClosureError::LdCache {
            path: path.clone(),
            source,
        })?;
    }

    let mut exe_paths: HashMap<String, PathBuf> = HashMap::new();
    for exe in executables {
        let image = normalize_image_path(&exe.image_path).ok_or_else(|| {
            ClosureError::RelativeImagePath {
                image_path: exe.image_path.clone(),
                host_path: exe.host_path.clone(),
            }
        })?;
        exe_paths
            .entry(image)
            .or_insert_with(|| exe.host_path.clone());
    }

    let mut merged: BTreeMap<String, Object> = BTreeMap::new();
    for (i, exe) in executables.iter().enumerate() {
        let extras: &[String] = if i == 0 { &opts.extra_libs } else { &[] };
        for node in resolver.resolve_executable(exe, extras)? {
            if let Some(exe_host) = exe_paths.get(&node.image_path) {
                if same_file(exe_host, &node.host_path) {
                    continue;
                }
                return Err(ClosureError::ImagePathConflict {
                    image_path: node.image_path,
                    first: exe_host.clone(),
                    second: node.host_path,
                });
            }
            if let Some(existing) = merged.get(&node.image_path) {
                if same_file(&existing.host_path, &node.host_path) {
                    continue;
                }
                return Err(ClosureError::ImagePathConflict {
                    image_path: node.image_path,
                    first: existing.host_path.clone(),
                    second: node.host_path,
                });
            }
            merged.insert(
                node.image_path.clone(),
                Object {
                    host_path: node.host_path,
                    image_path: node.image_path,
                    name: node.name,
                    needed_by: node.needed_by,
                    found_via: node.found_via,
                    relocated_from: node.relocated_from,
                },
            );
        }
    }
    Ok(Closure {
        objects: merged.into_values().collect(),
    })
}

pub(super) fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

impl Resolver<'_> {
    /// All objects one executable's process loads, except the executable.
    fn resolve_executable(
        &mut self,
        exe: &Executable,
        extras: &[String],
    ) -> Result<Vec<Node>, ClosureError> {
        let info = self.inspect_cached(&exe.host_path)?;
        // Fallback for relocated cache hits; replaced by libc's directory below.
        let fallback = match triplet(&info) {
            Some(t) => format!("/lib/{t}"),
            None => "/lib".to_owned(),
        };
        let (nodes, names) = self.run(exe, extras, &fallback)?;
        let relocated = nodes.iter().any(|n| n.relocated_from.is_some());
        let libc_dir = names
            .get("libc.so.6")
            .map(|&i| &nodes[i])
            .filter(|n| n.relocated_from.is_none())
            .map(|n| image_dir(&n.image_path).to_owned());
        let nodes = match libc_dir {
            // Relocated objects' $ORIGIN depends on where they go: redo with libc's directory.
            Some(dir) if relocated && dir != fallback => self.run(exe, extras, &dir)?.0,
            _ => nodes,
        };
        Ok(nodes.into_iter().skip(1).collect())
    }

    /// Breadth-first resolution of one process; node 0 is the executable.
    fn run(
        &mut self,
        exe: &Executable,
        extras: &[String],
        reloc_dir: &str,
    ) -> Result<(Vec<Node>, HashMap<String, usize>), ClosureError> {
        let image_path = normalize_image_path(&exe.image_path).ok_or_else(|| {
            ClosureError::RelativeImagePath {
                image_path: exe.image_path.clone(),
                host_path: exe.host_path.clone(),
            }
        })?;
        let info = self.inspect_cached(&exe.host_path)?;
        let mut names: HashMap<String, usize> = HashMap::new();
        if let Some(soname) = &info.soname {
            names.insert(soname.clone(), 0);
        }
        let interp = info.interpreter.clone();
        let mut nodes = vec![Node {
            image_path: image_path.clone(),
            search_path: exe.host_path.clone(),
            host_path: exe.host_path.clone(),
            info,
            loader: None,
            name: image_path.clone(),
            needed_by: String::new(),
            found_via: FoundVia::Direct,
            relocated_from: None,
        }];

        if let Some(interp) = interp {
            let node = self.load_path(&nodes, 0, &interp, FoundVia::Interpreter)?;
            if let Some(soname) = &node.info.soname {
                names.entry(soname.clone()).or_insert(nodes.len());
            }
            names.insert(interp, nodes.len());
            nodes.push(node);
        }

        let mut cursor = 0;
        let mut extras_done = false;
        loop {
            while cursor < nodes.len() {
                // The interpreter's own dependencies are not loaded by it.
                if nodes[cursor].found_via != FoundVia::Interpreter {
                    let needed = nodes[cursor].info.needed.clone();
                    for name in &needed {
                        self.request(&mut nodes, &mut names, name, cursor, false, reloc_dir)?;
                    }
                }
                cursor += 1;
            }
            if extras_done || extras.is_empty() {
                break;
            }
            for name in extras {
                self.request(&mut nodes, &mut names, name, 0, true, reloc_dir)?;
            }
            extras_done = true;
        }
        Ok((nodes, names))
    }

    /// Resolves `name` requested by `nodes[requester]` unless already loaded.
    fn request(
        &mut self,
        nodes: &mut Vec<Node>,
        names: &mut HashMap<String, usize>,
        name: &str,
        requester: usize,
        extra: bool,
        reloc_dir: &str,
    ) -> Result<(), ClosureError> {
        if names.contains_key(name) {
            return Ok(());
        }
        let node = if name.contains('/') {
            let via = if extra {
                FoundVia::Extra
            } else {
                FoundVia::Direct
            };
            self.load_path(nodes, requester, name, via)?
        } else {
            self.search(nodes, requester, name, extra, reloc_dir)?
        };
        let index = nodes.len();
        if let Some(soname) = &node.info.soname {
            names.entry(soname.clone()).or_insert(index);
        }
        names.insert(name.to_owned(), index);
        nodes.push(node);
        Ok(())
    }

    /// Loads an object named by absolute path (interpreter, DT_NEEDED with `/`, extra path).
    fn load_path(
        &mut self,
        nodes: &[Node],
        requester: usize,
        name: &str,
        via: FoundVia,
    ) -> Result<Node, ClosureError> {
        let req = &nodes[requester];
        let Some(image_path) = normalize_image_path(name) else {
            // Relative to the process's working directory: unknowable here.
            return Err(ClosureError::LibraryNotFound {
                name: name.to_owned(),
                needed_by: req.image_path.clone(),
                searched: vec![PathBuf::from(name)],
            });
        };
        let search_path = self.sysroot_join(&image_path);
        let host_path = self.open_path(&search_path);
        let Some(arch) = probe(&host_path) else {
            if host_path.exists() {
                return Err(ClosureError::NotElf { path: host_path });
            }
            return Err(ClosureError::LibraryNotFound {
                name: name.to_owned(),
                needed_by: req.image_path.clone(),
                searched: vec![search_path],
            });
        };
        if arch != arch_of(&req.info) {
            return Err(ClosureError::WrongArchitecture {
                path: host_path,
                needed_by: req.image_path.clone(),
                expected: describe_arch(arch_of(&req.info)),
                found: describe_arch(arch),
            });
        }
        let info = self.inspect_cached(&host_path)?;
        Ok(Node {
            image_path,
            search_path,
            host_path,
            info,
            loader: Some(requester),
            name: name.to_owned(),
            needed_by: req.image_path.clone(),
            found_via: via,
            relocated_from: None,
        })
    }

    /// Searches for a bare soname in glibc's order.
    fn search(
        &mut self,
        nodes: &[Node],
        requester: usize,
        name: &str,
        extra: bool,
        reloc_dir: &str,
    ) -> Result<Node, ClosureError> {
        let req = &nodes[requester];
        let want = arch_of(&req.info);
        let mut searched: Vec<PathBuf> = Vec::new();
        for cand in self.candidates(nodes, requester, name) {
            if searched.contains(&cand.search_path) {
                continue;
            }
            searched.push(cand.search_path.clone());
            let host_path = self.open_path(&cand.search_path);
            if probe(&host_path) != Some(want) {
                continue;
            }
            let info = self.inspect_cached(&host_path)?;
            let mut image_path = cand.image_path;
            let mut relocated_from = None;
            if cand.from_cache {
                let in_default_dir = default_dirs(&req.info, &self.opts.sysroot)
                    .iter()
                    .any(|d| d == image_dir(&image_path));
                let named_as_requested = image_path.rsplit('/').next() == Some(name);
                if !in_default_dir || !named_as_requested {
                    relocated_from = Some(image_path);
                    image_path = join_image(reloc_dir, name);
                }
            }
            return Ok(Node {
                image_path,
                search_path: cand.search_path,
                host_path,
                info,
                loader: Some(requester),
                name: name.to_owned(),
                needed_by: req.image_path.clone(),
                found_via: if extra { FoundVia::Extra } else { cand.via },
                relocated_from,
            });
        }
        Err(ClosureError::LibraryNotFound {
            name: name.to_owned(),
            needed_by: req.image_path.clone(),
            searched,
        })
    }

    /// Every place to look for `name`, in glibc's order.
    fn candidates(&self, nodes: &[Node], requester: usize, name: &str) -> Vec<Candidate> {
        let req = &nodes[requester];
        let mut out = Vec::new();
        if req.info.runpath.is_empty() {
            let mut next = Some(requester);
            while let Some(i) = next {
                for entry in &nodes[i].info.rpath {
                    if let Some(c) =
                        self.dir_candidate(&nodes[i], entry, name, FoundVia::Rpath(entry.clone()))
                    {
                        out.push(c);
                    }
                }
                next = nodes[i].loader;
            }
        }
        for entry in &req.info.runpath {
            if let Some(c) = self.dir_candidate(req, entry, name, FoundVia::Runpath(entry.clone()))
            {
                out.push(c);
            }
        }
        if req.info.nodeflib {
            return out;
        }
        if let Some(cache) = &self.cache {
            let entries = cache.entries(name);
            // Baseline entries first: the image may run on a CPU without the
            // capabilities a glibc-hwcaps entry is built for.
            let ordered = entries
                .iter()
                .filter(|e| !e.is_hwcap_specific())
                .chain(entries.iter().filter(|e| e.is_hwcap_specific()));
            for entry in ordered {
                let Some(image_path) = entry.path.to_str().and_then(normalize_image_path) else {
                    continue;
                };
                out.push(Candidate {
                    search_path: self.sysroot_join(&image_path),
                    image_path,
                    via: FoundVia::LdCache,
                    from_cache: true,
                });
            }
        }
        for dir in default_dirs(&req.info, &self.opts.sysroot) {
            let image_path = join_image(&dir, name);
            out.push(Candidate {
                search_path: self.sysroot_join(&image_path),
                image_path,
                via: FoundVia::DefaultDir(dir),
                from_cache: false,
            });
        }
        out
    }

    /// The candidate for `name` in RPATH/RUNPATH `entry` of `owner`.
    fn dir_candidate(
        &self,
        owner: &Node,
        entry: &str,
        name: &str,
        via: FoundVia,
    ) -> Option<Candidate> {
        match expand_dst(entry, &owner.info)? {
            Expanded::Origin(rest) => {
                // `$ORIGIN` is replaced textually, as glibc does.
                let image_path =
                    join_image(&format!("{}{rest}", image_dir(&owner.image_path)), name);
                let host_dir = match owner.search_path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                let mut host_dir = host_dir.as_os_str().to_os_string();
                host_dir.push(&rest);
                Some(Candidate {
                    image_path,
                    search_path: PathBuf::from(host_dir).join(name),
                    via,
                    from_cache: false,
                })
            }
            Expanded::Absolute(dir) => {
                let image_path = join_image(&dir, name);
                Some(Candidate {
                    search_path: self.sysroot_join(&image_path),
                    image_path,
                    via,
                    from_cache: false,
                })
            }
        }
    }

    /// `image_path` (absolute) under the sysroot, unresolved.
    fn sysroot_join(&self, image_path: &str) -> PathBuf {
        self.opts.sysroot.join(image_path.trim_start_matches('/'))
    }

    /// The path to actually open for `path`: inside a sysroot other than `/`,
    /// symlinks are resolved relative to the sysroot.
    fn open_path(&self, path: &Path) -> PathBuf {
        if self.sysroot_is_root {
            return path.to_path_buf();
        }
        match path.strip_prefix(&self.opts.sysroot) {
            Ok(rel) => resolve_in_root(&self.opts.sysroot, rel),
            Err(_) => path.to_path_buf(),
        }
    }

    fn inspect_cached(&mut self, path: &Path) -> Result<ElfInfo, ClosureError> {
        if let Some(info) = self.infos.get(path) {
            return Ok(info.clone());
        }
        let info = inspect(path)?;
        self.infos.insert(path.to_path_buf(), info.clone());
        Ok(info)
    }
}
