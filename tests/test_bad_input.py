"""Bad input gets a ValueError (or FileNotFoundError) that names the problem: meshes, files, the command line.

One parametrised test per area asserts the error type and a key phrase of the message; a small fuzz
test checks that random small meshes either fail with a clear error or give finite, reciprocal voltages.
"""

import warnings
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.io import savemat

from jaxeit import ForwardModel, cli, mesh, protocol
from jaxeit.io import load_kit4, load_ktc2023, load_ktc_mesh

# -- meshes ------------------------------------------------------------------------------


def _arrays(m):
    return dict(nodes=np.array(m.nodes), triangles=np.array(m.triangles), electrode_edges=np.array(m.electrode_edges),
                edge_electrode=np.array(m.edge_electrode))


def _interior_edge(m):
    boundary = {tuple(sorted(e)) for e in m.boundary_edges().tolist()}
    return next(e for e in m.edges().tolist() if tuple(e) not in boundary)


def _interior_node(m):
    on_boundary = set(m.boundary_loop().tolist())
    return next(i for i in range(m.n_nodes) if i not in on_boundary)


def _overlap(m, a):
    first = a["electrode_edges"][a["edge_electrode"] == 0][:1]
    return {**a, "electrode_edges": np.vstack([a["electrode_edges"], first]),
            "edge_electrode": np.append(a["edge_electrode"], 1)}


def _extra_edge(m, a, edge):
    return {**a, "electrode_edges": np.vstack([a["electrode_edges"], [edge]]),
            "edge_electrode": np.append(a["edge_electrode"], 0)}


def _two_pieces(m, a):
    el = a["edge_electrode"].copy()
    el[el == 4] = 0  # electrode 0 also gets the edges of electrode 4, on the other side
    el[el > 4] -= 1
    return {**a, "edge_electrode": el}


def _second_part(m, a):
    n = len(a["nodes"])
    return {**a, "nodes": np.vstack([a["nodes"], [[3, 0], [4, 0], [3, 1]]]),
            "triangles": np.vstack([a["triangles"], [[n, n + 1, n + 2]]])}


def _duplicate_node(m, a):
    n = len(a["nodes"])
    tri = a["triangles"].copy()
    tri[0, 0] = n
    return {**a, "nodes": np.vstack([a["nodes"], a["nodes"][a["triangles"][0, 0]]]), "triangles": tri}


def _flat_triangle(m, a):
    n = len(a["nodes"])
    return {**a, "nodes": np.vstack([a["nodes"], [[2, 0], [3, 0], [4, 0]]]),
            "triangles": np.vstack([a["triangles"], [[n, n + 1, n + 2]]])}


def _nan_node(m, a):
    nodes = a["nodes"].copy()
    nodes[3] = np.nan
    return {**a, "nodes": nodes}


def _tangled(m, a):
    """An interior node pushed past its farthest neighbour: its triangles fold over their neighbours."""
    k = _interior_node(m)
    tri = a["triangles"]
    nb = np.setdiff1d(np.unique(tri[(tri == k).any(axis=1)]), [k])
    far = nb[np.argmax(np.linalg.norm(a["nodes"][nb] - a["nodes"][k], axis=1))]
    nodes = a["nodes"].copy()
    nodes[k] += 1.6 * (nodes[far] - nodes[k])
    return {**a, "nodes": nodes}


def _third_triangle_on_edge(m, a):
    e = _interior_edge(m)
    n = len(a["nodes"])
    mid = a["nodes"][e].mean(axis=0)
    return {**a, "nodes": np.vstack([a["nodes"], mid + [1e-3, 1e-3]]),
            "triangles": np.vstack([a["triangles"], [[e[0], e[1], n]]])}


MESH_CASES = {
    # name: (make the arrays from the tiny disk, from_arrays options, key phrase of the message)
    "overlapping electrodes": (_overlap, {}, "electrodes 0 and 1 overlap"),
    "electrode edge inside": (lambda m, a: _extra_edge(m, a, _interior_edge(m)), {}, "is an interior edge"),
    "electrode edge not a mesh edge": (lambda m, a: _extra_edge(m, a, [a["electrode_edges"][0, 0],
                                                                       a["electrode_edges"][-1, 1]]), {},
                                       "is not an edge of any triangle"),
    "edge listed twice": (lambda m, a: _extra_edge(m, a, a["electrode_edges"][0]), {},
                          "listed twice for electrode 0"),
    "electrode in two pieces": (_two_pieces, {}, "electrode 0 is made of 2 separate pieces"),
    "second disconnected part": (_second_part, {}, "2 disconnected parts"),
    "duplicate triangle": (lambda m, a: {**a, "triangles": np.vstack([a["triangles"], a["triangles"][5:6, [1, 2, 0]]])},
                           {}, "have the same nodes"),
    "duplicate node": (_duplicate_node, {}, "are at the same position"),
    "float indices": (lambda m, a: {**a, "triangles": a["triangles"] + 0.5}, {}, "is not a whole number"),
    "index out of range": (lambda m, a: {**a, "triangles": np.vstack([a["triangles"], [[0, 1, len(a["nodes"])]]])},
                           {}, "is not a node index in [0,"),
    "negative index": (lambda m, a: {**a, "triangles": np.vstack([a["triangles"], [[0, 1, -1]]])}, {},
                       "is not a node index"),
    "NaN coordinate": (_nan_node, {}, "NaN or inf coordinates"),
    "zero-area triangle": (_flat_triangle, {}, "degenerate"),
    "clockwise triangle without orient": (lambda m, a: {**a, "triangles": a["triangles"][:, [0, 2, 1]]},
                                          {"orient": False}, "orient=True"),
    "tangled mesh with orient=True": (_tangled, {"orient": True}, "tangled, not just listed clockwise"),
    "tangled mesh without orient": (_tangled, {"orient": False}, "inverted or degenerate"),
    "edge of three triangles": (_third_triangle_on_edge, {}, "at most two triangles"),
    "electrode index gap": (lambda m, a: {**a, "edge_electrode": np.where(a["edge_electrode"] == 3, 8,
                                                                          a["edge_electrode"])}, {},
                            "electrode 3 has no edges"),
    "electrode nodes shared": (lambda m, a: {**a, "electrode_nodes": np.zeros(8, int)}, {},
                               "share the electrode node 0"),
    "text indices": (lambda m, a: {**a, "triangles": a["triangles"].astype(str)}, {}, "integer node indices"),
}


@pytest.mark.parametrize("case", list(MESH_CASES))
def test_bad_mesh(case, tiny_disk):
    make, options, phrase = MESH_CASES[case]
    arrays = make(tiny_disk, _arrays(tiny_disk))
    with pytest.raises(ValueError, match=None) as err:
        mesh.Mesh.from_arrays(**arrays, **{"orient": True, **options})
    assert phrase in str(err.value), str(err.value)


def test_unused_node_is_removed_with_a_warning(tiny_disk):
    a = _arrays(tiny_disk)
    # an unused node in the middle of the numbering: every later index shifts down by one
    k = 10
    nodes = np.vstack([a["nodes"][:k], [[7.0, 7.0]], a["nodes"][k:]])
    shift = lambda idx: idx + (idx >= k)  # noqa: E731
    with pytest.warns(UserWarning, match=r"removed 1 node\(s\) used by no triangle \(first: \[10\]\)"):
        m = mesh.Mesh.from_arrays(nodes, shift(a["triangles"]), electrode_edges=shift(a["electrode_edges"]),
                                  edge_electrode=a["edge_electrode"])
    np.testing.assert_array_equal(m.nodes, tiny_disk.nodes)
    np.testing.assert_array_equal(m.triangles, tiny_disk.triangles)
    prot = protocol.adjacent(8)
    sigma = jnp.ones(m.n_elements)
    v = np.asarray(ForwardModel(m, prot).voltages(sigma))
    assert np.isfinite(v).all()
    np.testing.assert_allclose(v, np.asarray(ForwardModel(tiny_disk, prot).voltages(sigma)), rtol=1e-12)


def test_orient_flips_a_listed_clockwise_triangle(tiny_disk):
    a = _arrays(tiny_disk)
    a["triangles"][[3, 7]] = a["triangles"][[3, 7]][:, [0, 2, 1]]
    m = mesh.Mesh.from_arrays(**a, orient=True)
    assert np.all(m.areas() > 0)
    np.testing.assert_allclose(m.areas(), tiny_disk.areas())


GENERATOR_CASES = {
    "disk h=nan": (lambda: mesh.disk(h=float("nan")), "h (element size) must be a positive finite number"),
    "disk h=0": (lambda: mesh.disk(h=0.0), "h (element size) must be a positive finite number"),
    "disk h<0": (lambda: mesh.disk(h=-0.1), "h (element size)"),
    "disk h tiny": (lambda: mesh.disk(h=1e-5), "would give about"),
    "disk radius=nan": (lambda: mesh.disk(radius=float("nan")), "radius must be a positive finite number"),
    "disk width=nan": (lambda: mesh.disk(electrode_width=float("nan"), h=0.3), "electrode_width"),
    "disk 2.5 electrodes": (lambda: mesh.disk(n_electrodes=2.5, h=0.3), "n_electrodes must be an integer"),
    "disk edge_refinement=0": (lambda: mesh.disk(h=0.3, edge_refinement=0), "edge_refinement"),
    "disk offset=inf": (lambda: mesh.disk(h=0.3, offset=float("inf")), "offset must be a finite angle"),
    "ellipse a=0": (lambda: mesh.ellipse(a=0.0, h=0.3), "a (semi-axis)"),
    "thorax width<0": (lambda: mesh.thorax(width=-1.0, h=0.3), "width must be a positive"),
    "outline clockwise": (lambda: mesh.from_outline(lambda t: np.column_stack([np.cos(-2 * np.pi * t),
                                                                               np.sin(-2 * np.pi * t)]), h=0.3),
                          "counter-clockwise"),
}


@pytest.mark.parametrize("case", list(GENERATOR_CASES))
def test_bad_generator_arguments(case):
    make, phrase = GENERATOR_CASES[case]
    with pytest.raises(ValueError) as err:
        make()
    assert phrase in str(err.value), str(err.value)


def test_meshio_rejects_unsupported_cells(tiny_disk):
    import meshio

    m = tiny_disk.to_meshio()
    cells = [(c.type, c.data) for c in m.cells] + [("quad", np.array([[0, 1, 2, 3]]))]
    data = {k: [*v, v[0][:1]] for k, v in m.cell_data.items()}
    with pytest.raises(ValueError, match=r"does not support: \{'quad': 1\}"):
        mesh.from_meshio(meshio.Mesh(m.points, cells, cell_data=data))


# -- files -----------------------------------------------------------------------------


def _kit4_arrays():
    p = protocol.adjacent(16, exclude_driven=False)
    cur = np.tile(p.currents.T, (1, 5))[:, :79]
    meas = np.eye(16) - np.roll(np.eye(16), 1, axis=0)
    return {"CurrentPattern": cur, "MeasPattern": meas, "Uel": np.ones((16, 79))}


def _ktc_arrays():
    inj = np.zeros((32, 3))
    inj[[0, 2], 0] = 1, -1
    inj[[2, 4], 1] = 1, -1
    inj[[4, 6], 2] = 1, -1
    mpat = np.eye(32)[:, :31] - np.eye(32)[:, 1:]
    return {"Inj": inj, "Mpat": mpat, "Uel": np.ones((93, 1))}, {"Injref": inj, "Uelref": np.ones((93, 1))}


def _truncated_mesh(tmp_path, m):
    path = m.save(tmp_path / "mesh.npz")
    path.write_bytes(path.read_bytes()[:200])
    return lambda: mesh.Mesh.load(path)


def _mesh_npz(tmp_path, m, **change):
    arrays = {"nodes": m.nodes, "triangles": m.triangles, "electrode_edges": m.electrode_edges,
              "edge_electrode": m.edge_electrode, "electrode_nodes": m.electrode_nodes, "ref_node": m.ref_node}
    arrays.update(change)
    path = tmp_path / "mesh.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return lambda: mesh.Mesh.load(path)


def _kit4_file(tmp_path, **change):
    path = tmp_path / "datamat_x.mat"
    savemat(path, {**_kit4_arrays(), **change})
    return lambda: load_kit4(path)


def _zero_column(arr, col):
    arr = arr.copy()
    arr[:, col] = 0
    return arr


def _ktc_files(tmp_path, data_change=None, ref_change=None, *, level=1, ref_name="ref.mat"):
    data, ref = _ktc_arrays()
    savemat(tmp_path / "data1.mat", {**data, **(data_change or {})})
    savemat(tmp_path / "ref.mat", {**ref, **(ref_change or {})})
    return lambda: load_ktc2023(tmp_path / "data1.mat", tmp_path / ref_name, level=level)


def _nan_at(arr, i):
    arr = arr.copy()
    arr[i] = np.nan
    return arr


def _ktc_mesh_file(tmp_path, fractional):
    g = np.array([[0.0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]])
    h = np.array([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]], float)
    elfaces = np.empty((1, 2), dtype=object)
    elfaces[0, 0], elfaces[0, 1] = np.array([[0, 1]]), np.array([[2, 3]])
    if fractional:
        h[1, 1] = 2.5
    path = tmp_path / "Mesh_x.mat"
    savemat(path, {"g": g, "H": h, "elfaces": elfaces})
    return lambda: load_ktc_mesh(path)


FILE_CASES = {
    # name: (make a loader call, error type, key phrase); every message also names the file
    "Mesh.load truncated": (lambda p, m: _truncated_mesh(p, m), ValueError, "may be truncated"),
    "Mesh.load missing": (lambda p, m: (lambda: mesh.Mesh.load(p / "mesh.npz")), FileNotFoundError, "does not exist"),
    "Mesh.load text file": (lambda p, m: ((p / "mesh.npz").write_text("hello"),
                                          lambda: mesh.Mesh.load(p / "mesh.npz"))[1], ValueError, "cannot read a mesh"),
    "Mesh.load missing array": (lambda p, m: _mesh_npz(p, m, triangles=None), ValueError,
                                "lacks the array(s) ['triangles']"),
    "Mesh.load invalid mesh": (lambda p, m: _mesh_npz(p, m, triangles=m.triangles[:, [0, 2, 1]]), ValueError,
                               "holds an invalid mesh"),
    "KIT4 zero current pattern": (lambda p, m: _kit4_file(p, CurrentPattern=_zero_column(
                                      _kit4_arrays()["CurrentPattern"], 3)),
                                  ValueError, "CurrentPattern column 3 (0-based) is all zero"),
    "KIT4 unbalanced pattern": (lambda p, m: _kit4_file(p, CurrentPattern=np.abs(_kit4_arrays()["CurrentPattern"])),
                                ValueError, "not zero"),
    "KIT4 zero measurement": (lambda p, m: _kit4_file(p, MeasPattern=_zero_column(_kit4_arrays()["MeasPattern"], 5)),
                              ValueError, "MeasPattern column 5 (0-based) is all zero"),
    "KIT4 truncated": (lambda p, m: (savemat(p / "datamat_x.mat", _kit4_arrays()),
                                     (p / "datamat_x.mat").write_bytes((p / "datamat_x.mat").read_bytes()[:300]),
                                     lambda: load_kit4(p / "datamat_x.mat"))[2], ValueError, "cannot read"),
    "KIT4 a folder": (lambda p, m: ((p / "datamat_x.mat").mkdir(), lambda: load_kit4(p / "datamat_x.mat"))[1],
                      ValueError, "is a folder"),
    "KIT4 missing": (lambda p, m: (lambda: load_kit4(p / "datamat_x.mat")), FileNotFoundError, "not found"),
    "KTC zero injection": (lambda p, m: _ktc_files(p, {"Inj": _zero_column(_ktc_arrays()[0]["Inj"], 1)}), ValueError,
                           "Inj column 1 (0-based) is all zero"),
    "KIT4 all-zero voltages": (lambda p, m: _kit4_file(p, Uel=np.zeros((16, 79))), ValueError,
                               "'Uel' holds no nonzero voltage"),
    "KTC all-zero reference": (lambda p, m: _ktc_files(p, ref_change={"Uelref": np.zeros((93, 1))}), ValueError,
                               "'Uelref' holds no nonzero voltage"),
    "KTC fractional mesh index": (lambda p, m: _ktc_mesh_file(p, fractional=True), ValueError, "whole-number"),
    "KTC injections unlike the level's reference": (
        lambda p, m: _ktc_files(p, {"Inj": _ktc_arrays()[0]["Inj"][:, :2], "Uel": np.ones((62, 1))}, level=2),
        ValueError, "2 injections, but"),
    "KTC NaN measurement": (lambda p, m: _ktc_files(p, {"Uel": _nan_at(np.ones((93, 1)), 40)}), ValueError,
                            "NaN or inf (first at index 40)"),
    "KTC NaN in the reference": (lambda p, m: _ktc_files(p, ref_change={"Uelref": _nan_at(np.ones((93, 1)), 7)}),
                                 ValueError, "voltages of Uelref used at level 1 are NaN"),
    "KTC missing ref.mat": (lambda p, m: _ktc_files(p, ref_name="missing_ref.mat"), FileNotFoundError, "not found"),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_bad_file(case, tmp_path, tiny_disk):
    make, kind, phrase = FILE_CASES[case]
    load = make(tmp_path, tiny_disk)
    with pytest.raises(kind) as err:
        load()
    msg = str(err.value)
    assert phrase in msg and str(tmp_path) in msg, msg
    assert not isinstance(err.value, zipfile.BadZipFile)


def test_ktc_mesh_file_with_whole_float_indices_loads(tmp_path):
    assert _ktc_mesh_file(tmp_path, fractional=False)().n_electrodes == 2


# -- the command line ----------------------------------------------------------------------


def _npz(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return str(path)


CLI_CASES = {
    # name: (argv from tmp_path, key phrase)
    "all-zero voltages": (lambda p: ["reconstruct", _npz(p, v=np.zeros(208)), "--method", "gn"], "is all zero"),
    "constant voltages": (lambda p: ["reconstruct", _npz(p, v=np.ones(208)), "--method", "tv"], "same value"),
    "voltages equal reference": (lambda p: ["reconstruct", _npz(p, v=np.linspace(1, 2, 208),
                                                                reference=np.linspace(1, 2, 208)),
                                            "--method", "one-step"], "'v' equals 'reference'"),
    "--h 0": (lambda p: ["reconstruct", _npz(p, v=np.linspace(1, 2, 208)), "--h", "0", "--out", str(p / "o")],
              "h (element size) must be a positive finite number"),
    "--radius nan": (lambda p: ["reconstruct", _npz(p, v=np.linspace(1, 2, 208)), "--radius", "nan",
                                "--out", str(p / "o")], "radius must be a positive finite number"),
    "train-prior --workdir a file": (lambda p: ((p / "afile").write_text("x"),
                                                ["train-prior", "--workdir", str(p / "afile"), "--steps", "1"])[1],
                                     "is a file, not a folder"),
    "--out under a file": (lambda p: ((p / "afile").write_text("x"),
                                      ["reconstruct", _npz(p, v=np.linspace(1, 2, 208)), "--method", "one-step",
                                       "--out", str(p / "afile" / "sub")])[1], "cannot write"),
    "output name taken by a folder": (lambda p: ((p / "o" / "data_one-step.npz").mkdir(parents=True),
                                                 ["reconstruct", _npz(p, v=np.linspace(1, 2, 208)), "--method",
                                                  "one-step", "--out", str(p / "o")])[1],
                                      "a folder of that name is in the way"),
    "demo --out a file": (lambda p: ((p / "afile").write_text("x"), ["demo", "--out", str(p / "afile")])[1],
                          "cannot write"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_error_is_one_line_with_exit_2(case, tmp_path, capsys, monkeypatch):
    argv = CLI_CASES[case][0](tmp_path)
    phrase = CLI_CASES[case][1]

    def no_computing(*args, **kwargs):
        raise AssertionError("the command computed before it checked its input and output")

    # no mesh is made: input and output are checked first, and bad mesh sizes are rejected before gmsh
    # (patching a private function, which no other module imports by name, keeps the patch local)
    monkeypatch.setattr(mesh, "_gmsh_session", no_computing)
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("jaxeit") and "error:" in err and phrase in err, err
    if "folder" in case or "--out" in case:
        assert ".check" not in err and "/." not in err  # names the target, not a temporary file


def test_cli_names_the_target_when_the_final_rename_fails(tmp_path):
    """An OSError of os.replace(tmp, target) is reported with the target, not the temporary file."""
    target = tmp_path / "result.npz"
    target.mkdir()
    try:
        (tmp_path / ".result.npz.x.npz").write_bytes(b"x")
        import os

        os.replace(tmp_path / ".result.npz.x.npz", target)
    except OSError as e:
        line = cli.error_line(e)
    assert line.startswith("jaxeit: error:") and line.endswith(f"{target} (a folder is where a file is needed)"), line


# -- fuzz: random small meshes ----------------------------------------------------------------

N_BOUNDARY, N_INTERIOR, N_ELECTRODES = 16, 14, 4


def _random_mesh_arrays(rng):
    """A Delaunay disk with 16 boundary and 14 interior nodes (always 42 triangles) and 4 electrodes of
    2 boundary edges each, so that valid meshes share one compiled forward solve; then, half the
    time, one random corruption."""
    from scipy.spatial import Delaunay

    theta = np.linspace(0, 2 * np.pi, N_BOUNDARY, endpoint=False) + rng.uniform(-0.1, 0.1, N_BOUNDARY)
    r = np.sqrt(rng.uniform(0.02, 0.75, N_INTERIOR))
    phi = rng.uniform(0, 2 * np.pi, N_INTERIOR)
    nodes = np.vstack([np.column_stack([np.cos(theta), np.sin(theta)]),
                       np.column_stack([r * np.cos(phi), r * np.sin(phi)])])
    tri = Delaunay(nodes).simplices.astype(np.int64)
    start = rng.integers(0, 4) + 4 * np.arange(N_ELECTRODES)
    edges = np.array([[(s + j) % N_BOUNDARY, (s + j + 1) % N_BOUNDARY] for s in start for j in range(2)])
    edge_el = np.repeat(np.arange(N_ELECTRODES), 2)
    a = {"nodes": nodes, "triangles": tri, "electrode_edges": edges, "edge_electrode": edge_el}
    kind = rng.integers(0, 12)
    n = len(nodes)
    if kind == 0:  # jitter an interior node, maybe past its neighbours
        a["nodes"] = nodes.copy()
        a["nodes"][N_BOUNDARY + rng.integers(N_INTERIOR)] += rng.normal(0, 0.4, 2)
    elif kind == 1:  # repeat a triangle
        a["triangles"] = np.vstack([tri, tri[rng.integers(len(tri))][rng.permutation(3)]])
    elif kind == 2:  # an electrode edge replaced by a random pair of nodes
        a["electrode_edges"] = edges.copy()
        a["electrode_edges"][rng.integers(len(edges))] = rng.choice(n, 2, replace=False)
    elif kind == 3:  # an index out of range or fractional
        a["triangles"] = tri.astype(float)
        a["triangles"][rng.integers(len(tri)), rng.integers(3)] = rng.choice([n, -1, 2.5])
    elif kind == 4:  # a node moved onto another
        a["nodes"] = nodes.copy()
        a["nodes"][rng.integers(n)] = nodes[rng.integers(n)]
    elif kind == 5:  # clockwise triangles
        a["triangles"] = tri.copy()
        flip = rng.random(len(tri)) < 0.3
        a["triangles"][flip] = tri[flip][:, [0, 2, 1]]
    return a, bool(rng.integers(0, 2))


def test_fuzz_random_meshes_error_or_reciprocal_voltages():
    rng = np.random.default_rng(2024)
    prot = protocol.adjacent(N_ELECTRODES)
    outcomes = {"error": 0, "solved": 0}
    for _ in range(40):
        arrays, orient = _random_mesh_arrays(rng)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = mesh.Mesh.from_arrays(**arrays, orient=orient)
        except ValueError as err:
            msg = str(err)
            assert len(msg) > 30 and "\n" not in msg, msg
            outcomes["error"] += 1
            continue
        sigma = np.exp(rng.normal(0, 1.5, m.n_elements))
        fm = ForwardModel(m, prot, contact_impedance=float(10 ** rng.uniform(-3, 0)))
        if rng.random() < 0.2:  # a conductivity that is not positive and finite: a clear error
            sigma[rng.integers(m.n_elements)] = rng.choice([0.0, -1.0, np.nan, np.inf])
            with pytest.raises(ValueError, match="sigma"):
                fm.electrode_potentials(jnp.asarray(sigma))
            outcomes["error"] += 1
            continue
        u = np.asarray(fm.electrode_potentials(jnp.asarray(sigma)))
        assert np.isfinite(u).all()
        # reciprocity: the potential difference across drive pair q under pattern p equals the reverse
        transfer = u @ prot.currents.T
        np.testing.assert_allclose(transfer, transfer.T, rtol=1e-8, atol=1e-10 * np.abs(transfer).max())
        outcomes["solved"] += 1
    assert outcomes["error"] >= 5 and outcomes["solved"] >= 10, outcomes


def test_ktc_nan_only_at_removed_electrodes_loads(tmp_path):
    """A NaN in a measurement that the level discards is not an error (level 2 drops injection 0)."""
    data = _ktc_files(tmp_path, {"Uel": _nan_at(np.ones((93, 1)), 5)}, level=2)()
    assert not data.mask[5] and np.isnan(data.voltages[5])
    with pytest.raises(ValueError, match="NaN or inf"):
        _ktc_files(tmp_path, {"Uel": _nan_at(np.ones((93, 1)), 5)}, level=1)()


def test_a_segmentation_that_is_not_the_challenge_format_is_refused(tmp_path):
    from jaxeit.io import save_ktc_segmentation

    with pytest.raises(ValueError, match=r"\(256, 256\) with classes 0, 1, 2; got \(128, 128\)"):
        save_ktc_segmentation(tmp_path / "a.mat", np.zeros((128, 128), np.uint8))
    with pytest.raises(ValueError, match="values \\[0, 3\\]"):
        save_ktc_segmentation(tmp_path / "a.mat", np.where(np.eye(256) > 0, 3, 0))
    assert not (tmp_path / "a.mat").exists()
