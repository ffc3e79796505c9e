"""Starting geometries of the xTB reference data: a template's SMILES embedded in 3D (RDKit), a second fragment
placed at contact distance, waters placed around the solute, and the X–H bonds and stretched conformers of the
``stretch`` sampler.  Positions in Å; no xTB here."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from .templates import Template


def _embed(smiles: str, seed: int):
    try:
        from rdkit import Chem
        from rdkit.Chem import AllChem
    except ImportError:
        raise ImportError("building templates from SMILES needs RDKit: pip install rdkit (or the `data` extra)") from None
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    if mol.GetNumAtoms() == 1:
        return np.array([mol.GetAtomWithIdx(0).GetAtomicNum()]), np.zeros((1, 3))
    if AllChem.EmbedMolecule(mol, randomSeed=seed) != 0:
        raise RuntimeError(f"RDKit could not embed {smiles!r}")
    AllChem.MMFFOptimizeMolecule(mol)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    return z, mol.GetConformer().GetPositions()


def _solvate(z, pos, charge: int, n: int, rng) -> tuple:
    """Place ``n`` waters around the solute: O toward cations, H toward anions, 2.9 Å from its surface."""
    if n == 0:
        return z, pos
    center = pos.mean(0)
    radius = np.max(np.linalg.norm(pos - center, axis=1)) + 2.7
    zs, ps = [z], [pos]
    dirs = rng.normal(size=(n, 3))
    # spread the directions (a few repulsion sweeps on the sphere)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    for _ in range(50):
        diff = dirs[:, None] - dirs[None]
        d = np.linalg.norm(diff, axis=-1) + np.eye(n)
        dirs += 0.05 * (diff / d[..., None] ** 3).sum(1)
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    for u in dirs:
        o = center + radius * u
        perp = np.cross(u, rng.normal(size=3))
        perp /= np.linalg.norm(perp)
        half = np.deg2rad(104.5 / 2)
        sign = 1.0 if charge >= 0 else -1.0  # cation: H point away; anion: one H points to the ion
        if charge < 0:
            h1 = o - 0.957 * u
            h2 = o + 0.957 * (np.cos(np.deg2rad(104.5)) * (-u) + np.sin(np.deg2rad(104.5)) * perp)
        else:
            h1 = o + 0.957 * (np.cos(half) * u * sign + np.sin(half) * perp)
            h2 = o + 0.957 * (np.cos(half) * u * sign - np.sin(half) * perp)
        zs.append(np.array([8, 1, 1]))
        ps.append(np.array([o, h1, h2]))
    return np.concatenate(zs), np.concatenate(ps)


def _contact_site(mol, pos, frag, acceptor: bool):
    """(point, outward unit vector, whether it accepts an H-bond) where fragment ``frag`` (atom indices) meets its
    partner: its charged atom, else its first N/O/S (preferably an acceptor, one without H, when ``acceptor``, else a
    donor), pointing away from the atom's neighbours; else (no heteroatom, e.g. benzene) its centre along the ring
    normal."""
    atoms = [mol.GetAtomWithIdx(i) for i in frag]
    hetero = [a for a in atoms if a.GetAtomicNum() in (7, 8, 16)]
    picks = ([a for a in atoms if a.GetFormalCharge() != 0]
             + [a for a in hetero if (a.GetTotalNumHs(includeNeighbors=True) == 0) == acceptor] + hetero)
    if picks:
        a = picks[0]
        site = pos[a.GetIdx()]
        nb = [n.GetIdx() for n in a.GetNeighbors()]
        out = site - (pos[nb].mean(0) if nb else pos[list(frag)].mean(0))
        if np.linalg.norm(out) > 1e-6:
            accepts = a.GetFormalCharge() < 0 or a.GetTotalNumHs(includeNeighbors=True) == 0
            return site, out / np.linalg.norm(out), accepts
    heavy = [i for i in frag if mol.GetAtomWithIdx(i).GetAtomicNum() > 1] or list(frag)
    centre = pos[heavy].mean(0)
    normal = np.linalg.svd(pos[heavy] - centre)[2][-1] if len(heavy) > 2 else np.array([0.0, 0.0, 1.0])
    return centre, normal / np.linalg.norm(normal), False


def _rotation(a, b) -> np.ndarray:
    """The rotation matrix that turns unit vector ``a`` into unit vector ``b``."""
    v, c = np.cross(a, b), float(np.dot(a, b))
    if c < -1 + 1e-9:  # antiparallel: half a turn about any axis perpendicular to a
        p = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        p /= np.linalg.norm(p)
        return 2 * np.outer(p, p) - np.eye(3)
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1 + c)


def _place_fragments(smiles: str, z, pos, contact: float = 3.0, clash: float = 2.0) -> np.ndarray:
    """Positions of a two-fragment SMILES (``"A.B"``, a dimer) with B moved rigidly to contact distance from A.

    RDKit embeds each fragment about the origin, so they overlap.  Deterministically: B's contact site
    (:func:`_contact_site`: a charged atom, else a heteroatom, else the ring centre) faces A's, along A's outward
    direction (B offers an acceptor to a donor or cation of A, a donor to an acceptor or anion); of 12 twists about
    that axis, the one that lets B come closest is kept, at the smallest separation (0.02 Å steps) where the closest
    heavy atoms of A and B are ``contact`` Å apart and no atom pair is closer than ``clash`` Å.  Atom order (RDKit's,
    as the formal charges follow it) is kept.
    """
    from rdkit import Chem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    frags = [list(f) for f in Chem.GetMolFrags(mol)]
    if len(frags) == 1:
        return pos
    if len(frags) > 2:
        raise ValueError(f"{smiles!r}: only one- and two-fragment SMILES are placed, not {len(frags)} fragments")
    a, b = frags
    pos = np.array(pos, dtype=float)
    heavy_a, heavy_b = z[a] > 1, z[b] > 1
    site_a, out_a, accepts = _contact_site(mol, pos, a, acceptor=False)
    site_b, out_b, _ = _contact_site(mol, pos, b, acceptor=not accepts)
    turn = _rotation(out_b, -out_a)
    body = (pos[b] - site_b) @ turn.T  # B about its site, facing A
    best = None
    for k in range(12):
        phi = np.pi * k / 6  # twist about A's outward direction (Rodrigues)
        twisted = (body * np.cos(phi) + np.cross(out_a, body) * np.sin(phi)
                   + np.outer(body @ out_a, out_a) * (1 - np.cos(phi)))
        for r in np.arange(0.0, 12.0, 0.02):
            moved = site_a + r * out_a + twisted
            d = np.linalg.norm(pos[a][:, None] - moved[None], axis=-1)
            if d[np.ix_(heavy_a, heavy_b)].min() >= contact and d.min() >= clash:
                if best is None or r < best[0] - 1e-9:
                    best = (r, moved)
                break
    pos[b] = best[1]
    return pos


def build_template(t: Template, seed: int = 0):
    """(atomic numbers [N] int, positions [N,3] Å) of a template's starting structure: its SMILES embedded by RDKit
    (``seed``), a dotted SMILES's second fragment placed at contact distance (:func:`_place_fragments`), then
    ``t.waters`` waters placed around it (:func:`_solvate`)."""
    z, pos = _embed(t.smiles, seed)
    if "." in t.smiles:
        pos = _place_fragments(t.smiles, z, pos)
    if t.waters:
        z, pos = _solvate(z, pos, t.charge, t.waters, np.random.default_rng(seed))
    return z, pos


def xh_bonds(atoms) -> List[tuple]:
    """(heavy atom, hydrogen) index pairs closer than 1.45 Å: every X–H bond of H C N O F P S Cl Br (S–H 1.34 Å,
    P–H 1.42 Å), no hydrogen bond (H···O/N >= 1.6 Å)."""
    pos, z = atoms.positions, atoms.numbers
    return [(i, j) for i in range(len(z)) if z[i] > 1 for j in range(len(z))
            if z[j] == 1 and np.linalg.norm(pos[i] - pos[j]) < 1.45]


def stretched_geometry(reference: np.ndarray, bonds: Sequence[Tuple[int, int]], rng: np.random.Generator,
                       factor: float) -> np.ndarray:
    """The stretch sampler's conformer: ``reference`` (Å) with Gaussian noise (0.04 Å) and one random X–H bond of
    ``bonds`` scaled to ``factor`` × its reference length; a pulled H that lands within 1 Å of another atom (e.g.
    in a neighbouring water) is drawn again."""
    while True:
        heavy, h = bonds[int(rng.integers(len(bonds)))]
        noisy = reference + rng.normal(scale=0.04, size=reference.shape)
        bond = noisy[h] - noisy[heavy]
        noisy[h] = noisy[heavy] + bond / np.linalg.norm(bond) * factor * np.linalg.norm(reference[h] - reference[heavy])
        others = [i for i in range(len(noisy)) if i not in (h, heavy)]
        if not others or np.linalg.norm(noisy[others] - noisy[h], axis=1).min() > 1.0:
            return noisy
