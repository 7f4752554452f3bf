"""Batched PyTorch rendering of stars and bulge + disk galaxies on CPU or CUDA (``simulator=torch``).

The model is that of :class:`bliss.simulator.render.GalsimRenderer`, which stays the reference,
and so is the method: each source is drawn on an odd stamp in Fourier space (profile x PSF x
pixel response x sub-pixel phase), transformed back and added to its image. Here a whole batch
of images is drawn at once, on the device of the inputs (or ``device``), and without GalSim: the
profiles' Fourier transforms are in :mod:`bliss.simulator._torch_profiles` (the de Vaucouleurs
bulge as a mixture of Gaussians, after Hogg & Lang 2013). Stamp sizes follow GalSim's ``stepk``
rules, so both renderers fold the same light into the same stamps. Coordinates follow
:mod:`bliss.catalog`: ``(row, col)`` pixels, pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)``.
"""

__all__ = ["TorchRenderer", "add_sky_and_noise_torch", "draw_unit_stamps", "psf_image_fourier"]

import math
from collections.abc import Mapping

import numpy as np
import scipy.fft
import torch
from einops import rearrange
from scipy.special import gammaincinv
from torch import Tensor

from bliss.catalog import GALAXY_KEYS, FullCatalog
from bliss.catalog.shapes import check_shape
from bliss.errors import BlissValueError
from bliss.simulator._stamps import (
    checked_inputs,
    frequencies,
    galaxy_radius,
    paste_stamps,
    pixel_response,
    stamp_size,
)
from bliss.simulator._stamps import stamp_sizes as allowed_stamp_sizes
from bliss.simulator._torch_profiles import (
    DEVAUCOULEURS_B,
    EXP_HLR_PER_SCALE_RADIUS,
    exponential_radius,
    galaxy_fourier,
    image_fourier,
    moffat_fourier,
    moffat_scale_radius,
)
from bliss.simulator.lensing import check_lensing, lensing_matrix, stretch
from bliss.simulator.noise import NoiseModel, add_sky_and_noise, gaussian_counts_

#: GalSim's ``GSParams.stepk_minimum_hlr``: a stamp holds at least this many half-light radii
_STEPK_MINIMUM_HLR = 5.0
#: complex values per chunk of stamps (64 MB in complex64), to bound memory on big batches
_CHUNK_ELEMENTS = 2**23


class TorchRenderer:
    """Render noise-free multi-band images of whole batches with PyTorch, on CPU or CUDA.

    The same profiles, stamp sizes and pixel integration as
    :class:`~bliss.simulator.render.GalsimRenderer`; results agree with it to < 1e-3 of a
    source's flux (see ``tests/unit/simulator/test_torch_render.py``).

    Args:
        max_stamp_px: largest stamp side in pixels (rounded down to odd) [default: 64].
        min_stamp_px: smallest stamp side in pixels (rounded up to odd) [default: 15].
        folding_threshold: GalSim's ``folding_threshold``, the fraction of light allowed outside
            a stamp [default: 5e-3].
        device: where to render, e.g. ``"cuda"`` [default: None, the device of the catalog].

    Raises:
        BlissValueError: ``min_stamp_px`` is below 3, there is no odd size between the two stamp
            sizes, or ``folding_threshold`` is outside (0, 1).

    Example:
        >>> import torch
        >>> from bliss.catalog import FullCatalog
        >>> catalog = FullCatalog(32, 32, {"n_sources": torch.tensor([1]),
        ...     "plocs": torch.tensor([[[16.0, 16.0]]]), "fluxes": torch.tensor([[[1000.0]]])})
        >>> image = TorchRenderer().render(catalog, torch.tensor([[1.3]]), 0.396)
        >>> image.shape, round(float(image.sum()))
        (torch.Size([1, 1, 32, 32]), 1000)
    """

    def __init__(
        self,
        max_stamp_px: int = 64,
        min_stamp_px: int = 15,
        folding_threshold: float = 5e-3,
        device: str | None = None,
    ) -> None:
        if min_stamp_px < 3:
            raise BlissValueError(f"min_stamp_px={min_stamp_px}; expected at least 3 pixels.")
        if (max_stamp_px - 1) // 2 < min_stamp_px // 2:
            raise BlissValueError(
                f"max_stamp_px={max_stamp_px}, min_stamp_px={min_stamp_px}; expected an odd size "
                "between them: raise max_stamp_px."
            )
        if not 0 < folding_threshold < 1:
            raise BlissValueError(
                f"folding_threshold={folding_threshold}; expected a fraction in (0, 1), e.g. 5e-3."
            )
        self.sizes = allowed_stamp_sizes(min_stamp_px, max_stamp_px)
        self.folding_threshold = folding_threshold
        self.device = None if device is None else torch.device(device)
        # radii (in half-light radii) holding 1 - folding_threshold of the light, as GalSim's stepk
        disk = exponential_radius(folding_threshold) / EXP_HLR_PER_SCALE_RADIUS
        bulge = (gammaincinv(8, 1 - folding_threshold) / DEVAUCOULEURS_B) ** 4
        self._disk_radius = max(disk, _STEPK_MINIMUM_HLR)
        self._bulge_radius = max(float(bulge), _STEPK_MINIMUM_HLR)

    def render(
        self,
        catalog: FullCatalog,
        psf_fwhm_arcsec: Tensor,
        pixel_scale_arcsec: float,
        *,
        psf_beta: float = 3.5,
        psf_images: Mapping[int, tuple[Tensor, float]] | None = None,
        band_offsets_px: Tensor | None = None,
        image_psfs: tuple[Tensor, Tensor] | None = None,
        lensing: Tensor | None = None,
    ) -> Tensor:
        """Draw every source of every image in every band.

        Args:
            catalog: ``plocs`` (``(row, col)`` pixels), ``fluxes`` (``b n c``) and, for galaxies,
                ``source_type`` (``b n 1``, 1 = galaxy) and the six
                :data:`~bliss.catalog.tile.GALAXY_KEYS` (see
                :func:`~bliss.simulator.render.galaxy_profile`); without ``source_type`` every
                source is a star. Its ``height_px`` and ``width_px`` give the image size; sources
                may lie outside the image, their light spills in. A :class:`TileCatalog` converts
                with ``to_full_catalog()``.
            psf_fwhm_arcsec: FWHM of the Moffat PSF of each image in each band, arcsec.
                Shape: ``b c``.
            pixel_scale_arcsec: pixel size, arcsec.
            psf_beta: Moffat index of the PSF [default: 3.5].
            psf_images: band index -> (PSF image ``h w`` at this pixel scale, pixel-integrated and
                centred on its middle, any normalisation; the FWHM in arcsec it has). That band
                uses the image, dilated to ``psf_fwhm_arcsec``, instead of a Moffat profile
                [default: none].
            band_offsets_px: a ``(row, col)`` shift added to every position in each band of each
                image, e.g. a sub-pixel dither [default: none]. Shape: ``b c 2``.
            image_psfs: a PSF image for every image and band (``b c h w``, unit sum, pixel
                integrated, at this pixel scale; e.g. observed on real frames) and the factor by
                which each image's PSFs are dilated (``b``). They replace the Moffat profiles and
                ``psf_images``; ``psf_fwhm_arcsec`` is then only their label [default: none].
            lensing: reduced shear and magnification ``(g1, g2, mu)`` of each source of the
                catalog, applied to galaxies as GalSim's ``lens`` does, flux included (see
                :mod:`bliss.simulator.lensing`) [default: none]. Shape: ``b n 3``.

        Returns:
            The noise-free, sky-free images on the rendering device. Shape: ``b c h w`` (float32).

        Units:
            Output pixels in the unit of ``fluxes`` (electrons in :class:`ImageSimulator`).

        Raises:
            BlissShapeError: a tensor does not have the shape above.
            BlissValueError: a value is non-finite or out of range, or a PSF image is unusable.
        """
        device = self.device or catalog["plocs"].device
        sizes = check_shape("psf_fwhm_arcsec", psf_fwhm_arcsec, "b c")
        sizes = check_shape("fluxes", catalog["fluxes"], "b n c", sizes)
        offsets = torch.zeros(sizes["b"], sizes["c"], 2)
        if band_offsets_px is not None:
            check_shape("band_offsets_px", band_offsets_px, "b c 2", sizes)
            offsets = band_offsets_px.detach().cpu().double()
        fwhm = psf_fwhm_arcsec.detach().cpu().double()
        if not (torch.isfinite(fwhm).all() and (fwhm > 0).all() and pixel_scale_arcsec > 0):
            raise BlissValueError(
                f"psf_fwhm_arcsec has minimum {fwhm.min().item()} and pixel_scale_arcsec is "
                f"{pixel_scale_arcsec}; expected positive finite widths in arcsec."
            )
        owner, plocs, flux, is_galaxy, params = self._sources(catalog, offsets)
        lensed = None
        if lensing is not None:
            check_shape("lensing", lensing, "b n 3", {"b": sizes["b"], "n": sizes["n"]})
            present = torch.arange(sizes["n"]) < catalog["n_sources"].detach().cpu()[:, None]
            lensed = check_lensing(lensing.detach().cpu().double()[present].numpy())
        psf_images = _checked_psf_images(psf_images, sizes["c"])
        if image_psfs is not None:
            image_psfs = _checked_image_psfs(image_psfs, sizes)
        shape = np.array([catalog.height_px, catalog.width_px])
        # per-source bookkeeping in numpy on the CPU; the Fourier work runs on `device`
        if image_psfs is None:
            psf_radius = self._psf_radius(fwhm, psf_beta, psf_images, pixel_scale_arcsec)
        else:  # an image PSF extends to the image's edge, dilated with the PSF
            images, dilation = image_psfs
            half_width = max(images.shape[-2:]) / 2 * pixel_scale_arcsec
            psf_radius = (half_width * dilation)[:, None].expand(-1, sizes["c"])
        psf_radius = psf_radius.amax(1).numpy()[owner]
        radius = psf_radius.copy()
        galaxy_radii = self._galaxy_radius(params[is_galaxy])
        if lensed is not None:
            galaxy_radii = galaxy_radii * stretch(lensed[is_galaxy])
        radius[is_galaxy] = np.hypot(psf_radius[is_galaxy], galaxy_radii)
        size_px = stamp_size(self.sizes, radius / pixel_scale_arcsec)
        offsets_int = offsets.round().numpy().astype(np.int64)
        corner = np.floor(plocs).astype(np.int64) - (size_px // 2)[:, None]
        top_left = corner[:, None] + offsets_int[owner]  # N c 2: whole-pixel offsets move stamps
        bottom_right = top_left + size_px[:, None, None]
        visible = np.all((bottom_right.max(1) > 0) & (top_left.min(1) < shape), axis=1)
        # the canvas: on the CPU the images, as stamps are clipped while pasted; elsewhere the
        # images plus a border holding every visible stamp; (before, after) x axis
        on_cpu = torch.device(device).type == "cpu"
        pad = np.zeros((2, 2), dtype=np.int64)
        if visible.any() and not on_cpu:
            pad[0] = np.maximum(-top_left[visible].min((0, 1)), 0)
            pad[1] = np.maximum(bottom_right[visible].max((0, 1)) - shape, 0)
        canvas_shape = (shape + pad.sum(0)).tolist()
        if on_cpu:
            canvas = _numpy_backed(np.zeros((sizes["b"], sizes["c"], *canvas_shape), np.float32))
        else:
            canvas = torch.zeros(sizes["b"], sizes["c"], *canvas_shape, device=device)
        fraction = offsets.numpy() - offsets_int
        # images observed in the same conditions share their PSFs' Fourier transforms
        if image_psfs is None:
            psfs, psf_index = self._distinct_psfs(fwhm, psf_beta, psf_images)
        else:  # one PSF per image and band
            psf_index = np.arange(sizes["b"] * sizes["c"]).reshape(sizes["b"], sizes["c"])
        for size in np.unique(size_px[visible]).tolist():
            if image_psfs is None:
                psf = self._psf_fourier(
                    psfs, psf_beta, psf_images, size, pixel_scale_arcsec, device
                )
            else:
                psf = _image_psf_fourier(*image_psfs, size, device)
            chosen = np.flatnonzero(visible & (size_px == size))
            chunk = max(1, _CHUNK_ELEMENTS // (sizes["c"] * size * (size // 2 + 1)))
            for start in range(0, len(chosen), chunk):
                part = chosen[start : start + chunk]
                # position in stamp pixels, from the centre of stamp pixel (0, 0)
                shift = (plocs[part] - corner[part] - 0.5)[:, None] + fraction[owner[part]]
                profile = torch.ones(len(part), size, size // 2 + 1, device=device)
                galaxies = np.flatnonzero(is_galaxy[part])
                if len(galaxies):
                    galaxy_params = torch.tensor(params[part[galaxies]], device=device).float()
                    matrix = None
                    if lensed is not None:
                        matrix = lensing_matrix(lensed[part[galaxies]])
                        matrix = torch.tensor(matrix, device=device).float()
                    profile[galaxies] = galaxy_fourier(
                        galaxy_params, size, pixel_scale_arcsec, matrix
                    )
                stamps = _draw_stamps(
                    profile,
                    torch.as_tensor(flux[part], device=device),
                    torch.as_tensor(shift, device=device),
                    psf[torch.as_tensor(psf_index[owner[part]], device=device)],
                )
                if on_cpu:  # slices of numpy views: several times faster than index_add_
                    paste_stamps(canvas.numpy(), stamps.numpy(), owner[part], top_left[part])
                else:
                    _paste(canvas, stamps, owner[part], top_left[part] + pad[0])
        if on_cpu:
            return canvas
        (top, left), (height, width) = pad[0].tolist(), shape.tolist()
        return canvas[..., top : top + height, left : left + width].contiguous()

    def _sources(self, catalog: FullCatalog, offsets: Tensor) -> tuple[np.ndarray, ...]:
        """Image index (``N``), plocs, fluxes, galaxy flags and parameters of the sources, as numpy."""
        n_sources = catalog["n_sources"].detach().cpu()
        present = (torch.arange(catalog.max_n_sources) < n_sources[:, None]).numpy()
        owner = np.nonzero(present)[0]

        def column(key: str) -> np.ndarray:
            return catalog[key].detach().cpu().double().numpy()[present]

        n_bands = catalog["fluxes"].shape[-1]
        is_galaxy = np.zeros(len(owner), dtype=bool)
        params = np.zeros((len(owner), len(GALAXY_KEYS)))
        if "source_type" in catalog:
            is_galaxy = column("source_type")[:, 0] > 0.5
            if is_galaxy.any():
                params = np.concatenate([column(key) for key in GALAXY_KEYS], axis=-1)
        plocs, flux, is_galaxy, params, _ = checked_inputs(
            column("plocs"), column("fluxes"), is_galaxy, params, None, n_bands
        )
        if not torch.isfinite(offsets).all():
            raise BlissValueError("band_offsets_px holds non-finite values; fix the dither.")
        return owner, plocs, flux.astype(np.float32), is_galaxy, params

    def _galaxy_radius(self, params: np.ndarray) -> np.ndarray:
        """Radius (arcsec) holding all but about ``folding_threshold`` of each galaxy's light."""
        return galaxy_radius(params, self._disk_radius, self._bulge_radius)

    def _psf_radius(
        self,
        fwhm: Tensor,
        beta: float,
        psf_images: Mapping[int, tuple[Tensor, float]],
        scale: float,
    ) -> Tensor:
        """Radius (arcsec) holding all but ``folding_threshold`` of each PSF's light. Shape: ``b c``."""
        alpha = moffat_scale_radius(fwhm, beta)
        hlr = alpha * math.sqrt(0.5 ** (1 / (1 - beta)) - 1)
        radius = torch.maximum(
            alpha * self.folding_threshold ** (-0.5 / (beta - 1)), _STEPK_MINIMUM_HLR * hlr
        )
        for band, (image, image_fwhm) in psf_images.items():
            # an image PSF extends to the image's edge, dilated with the PSF
            radius[:, band] = max(image.shape) / 2 * scale * fwhm[:, band] / image_fwhm
        return radius

    def _distinct_psfs(
        self, fwhm: Tensor, beta: float, psf_images: Mapping[int, tuple[Tensor, float]]
    ) -> tuple[Tensor, np.ndarray]:
        """The distinct PSFs of a batch, and which one each image uses in each band.

        Returns:
            One row per distinct PSF, ``(band of its image, dilation)`` or ``(-1, Moffat scale
            radius in arcsec)`` (shape ``u 2``), and the row of each image and band (``b c``).
        """
        kind = torch.full_like(fwhm, -1.0)
        width = moffat_scale_radius(fwhm, beta)
        for band, (_, image_fwhm) in psf_images.items():
            kind[:, band] = band
            width[:, band] = fwhm[:, band] / image_fwhm
        rows = rearrange(torch.stack([kind, width], -1), "b c two -> (b c) two")
        rows, index = torch.unique(rows, dim=0, return_inverse=True)
        return rows, index.reshape(fwhm.shape).numpy()

    def _psf_fourier(
        self,
        psfs: Tensor,
        beta: float,
        psf_images: Mapping[int, tuple[Tensor, float]],
        size: int,
        scale: float,
        device: torch.device,
    ) -> Tensor:
        """Fourier transforms of the pixel-integrated PSFs of :meth:`_distinct_psfs`. Shape: ``u size m``."""
        freq_row, freq_col = (torch.as_tensor(f, device=device) for f in frequencies(size))
        k = (2 * math.pi / scale) * torch.hypot(freq_row[:, None], freq_col[None, :])
        width = rearrange(psfs[:, 1], "u -> u 1 1").to(device)
        fourier = moffat_fourier(float(beta))((k * width).float()).to(torch.complex64)
        for band, (image, _) in psf_images.items():
            chosen = (psfs[:, 0] == band).to(device)
            if chosen.any():
                dilation = width[chosen, 0, 0]
                transform = image_fourier(image.to(device), dilation, freq_row, freq_col)
                fourier[chosen] = transform.to(torch.complex64)
        return fourier * torch.as_tensor(pixel_response(size), device=device).float()


def _image_psf_fourier(images: Tensor, dilation: Tensor, size: int, device: torch.device) -> Tensor:
    """Fourier transforms of every image's PSF in every band, pixel included. Shape ``(b c) size m``."""
    freq_row, freq_col = (torch.as_tensor(f, device=device) for f in frequencies(size))
    b, c = images.shape[:2]
    flat = rearrange(images, "b c h w -> (b c) h w").to(device)
    transform = image_fourier(flat, dilation.repeat_interleave(c).to(device), freq_row, freq_col)
    return (
        transform.to(torch.complex64) * torch.as_tensor(pixel_response(size), device=device).float()
    )


def _checked_image_psfs(
    image_psfs: tuple[Tensor, Tensor], sizes: dict[str, int]
) -> tuple[Tensor, Tensor]:
    """``image_psfs`` of :meth:`TorchRenderer.render` as (unit-sum float64 images, dilations), checked."""
    images, dilation = image_psfs
    check_shape("image_psfs[0]", images, "b c h w", {"b": sizes["b"], "c": sizes["c"]})
    check_shape("image_psfs[1]", dilation, "b", {"b": sizes["b"]})
    images, dilation = images.detach().cpu().double(), dilation.detach().cpu().double()
    total = images.sum(dim=(-2, -1), keepdim=True)
    if not (torch.isfinite(images).all() and (total > 0).all() and (dilation > 0).all()):
        raise BlissValueError(
            "image_psfs: expected finite PSF images with positive sums and positive dilations."
        )
    return images / total, dilation


def _checked_psf_images(
    psf_images: Mapping[int, tuple[Tensor, float]] | None, n_bands: int
) -> dict[int, tuple[Tensor, float]]:
    """The PSF images of :meth:`TorchRenderer.render` as unit-sum float64 tensors, after checking them."""
    checked = {}
    for band, (image, fwhm) in (psf_images or {}).items():
        if not 0 <= band < n_bands:
            raise BlissValueError(
                f"psf_images has band index {band}; expected indices 0..{n_bands - 1}, one per "
                "band of the catalog's fluxes."
            )
        image = torch.as_tensor(image).detach().double()
        check_shape(f"psf_images[{band}]", image, "h w")
        total = image.sum()
        if not (torch.isfinite(image).all() and total > 0 and fwhm > 0):
            raise BlissValueError(
                f"psf_images[{band}] sums to {total.item()} with FWHM {fwhm}; expected finite "
                "pixels with a positive sum and a positive FWHM in arcsec."
            )
        checked[band] = (image / total, float(fwhm))
    return checked


def psf_image_fourier(images: Tensor, size: int) -> Tensor:
    """Fourier transforms of PSF images on a stamp of side ``size``, the pixel included.

    ``images``: one per band, pixel-integrated, unit sum, centred on the middle pixel (``c h
    w``). Compute once and pass to :func:`draw_unit_stamps` for many sources. Shape ``c size m``.
    """
    images = images.detach().cpu().double()
    return _image_psf_fourier(images[None], torch.ones(1, dtype=torch.float64), size, images.device)


def draw_unit_stamps(
    params: Tensor, is_galaxy: Tensor, shift: Tensor, psf_fourier: Tensor, scale: float
) -> Tensor:
    """Unit-flux stamps of sources, each on its own copy of one stamp grid, in every band.

    The profiles and pixel integration of :meth:`TorchRenderer.render`, for callers that draw
    many sources with one PSF per band (model fitting): the PSF's transform is computed once
    (:func:`psf_image_fourier`). Light beyond the stamp's edges wraps around, so the stamp must
    be larger than the sources' light.

    Args:
        params: the :data:`~bliss.catalog.tile.GALAXY_KEYS` of each source (ignored for stars).
            Shape ``g 6``.
        is_galaxy: which sources are galaxies (the others are points). Shape ``g``.
        shift: each source's position in pixels from the centre of the stamp's pixel (0, 0),
            ``(row, col)``. Shape ``g 2``.
        psf_fourier: from :func:`psf_image_fourier`. Shape ``c s m``.
        scale: pixel size, arcsec.

    Returns:
        The stamps (float64). Shape ``g c s s``.
    """
    count, (n_bands, size, _) = len(params), psf_fourier.shape
    profile = torch.ones(count, size, size // 2 + 1, dtype=torch.float64)
    if bool(is_galaxy.any()):
        profile[is_galaxy] = galaxy_fourier(params[is_galaxy].double(), size, scale)
    shifts = shift.double()[:, None].expand(-1, n_bands, -1)
    flux = torch.ones(count, n_bands, dtype=torch.float32)
    psf = psf_fourier[None].expand(count, -1, -1, -1)
    return _draw_stamps(profile.float(), flux, shifts, psf).double()


def _draw_stamps(profile: Tensor, flux: Tensor, shift: Tensor, psf: Tensor) -> Tensor:
    """Stamps (``g c s s``) from profiles (``g s m``), fluxes (``g c``), shifts (``g c 2``) and PSFs (``g c s m``)."""
    size = psf.shape[-2]
    freq_row, freq_col = (torch.as_tensor(f, device=psf.device) for f in frequencies(size))
    shift = shift.double()
    phase_row = torch.exp(-2j * math.pi * shift[..., 0, None] * freq_row).to(torch.complex64)
    phase_col = torch.exp(-2j * math.pi * shift[..., 1, None] * freq_col).to(torch.complex64)
    fourier = phase_row[..., :, None] * (flux[..., None] * phase_col)[..., None, :]
    fourier *= psf
    fourier *= profile[:, None]
    if fourier.device.type == "cpu":  # scipy's pocketfft: 1.5-3x torch's on small stamps
        stamps = scipy.fft.irfft2(fourier.numpy(), s=(size, size), workers=torch.get_num_threads())
        return torch.from_numpy(stamps)
    return torch.fft.irfft2(fourier, s=(size, size))


def _numpy_backed(array: np.ndarray) -> Tensor:
    """A CPU tensor sharing the memory of a new numpy array.

    numpy asks Linux for transparent huge pages for large arrays and torch does not, which makes
    the first touch of an image batch's memory ~4x cheaper (~0.35 ms per 256 x 256 x 5 image).
    """
    return torch.from_numpy(array)


def _paste(canvas: Tensor, stamps: Tensor, owner: np.ndarray, top_left: np.ndarray) -> None:
    """Add stamps (``g c s s``) of images ``owner`` (``g``) at ``top_left`` (``g c 2``) to ``canvas``."""
    _, n_bands, height, width = canvas.shape
    size = stamps.shape[-1]
    plane = owner[:, None] * n_bands + np.arange(n_bands)  # g c
    first = torch.as_tensor((plane * height + top_left[..., 0]) * width + top_left[..., 1])
    pattern = torch.arange(size)[:, None] * width + torch.arange(size)  # s s
    index = first.to(canvas.device)[..., None, None] + pattern.to(canvas.device)
    canvas.view(-1).index_add_(0, index.view(-1), stamps.reshape(-1))


def add_sky_and_noise_torch(
    images: Tensor,
    sky_electrons: Tensor,
    noise: NoiseModel | str,
    generator: torch.Generator,
    inplace: bool = False,
) -> Tensor:
    """Add a flat sky per image and band and draw the observed counts, on the images' device.

    The torch twin of :func:`bliss.simulator.noise.add_sky_and_noise`; on the CPU, Poisson
    counts come from that function's sampler (about 3x faster than ``torch.poisson``), seeded
    from ``generator``.

    Args:
        images: noise-free source light, electrons. Shape: ``b c h w``.
        sky_electrons: sky level, electrons per pixel. Shape: ``b c``.
        noise: ``"poisson"``, ``"gaussian"`` (its approximation: mean and variance equal to the
            expected counts) or ``"none"``.
        generator: random stream on the images' device (seeded by the caller).
        inplace: overwrite ``images`` (float32, contiguous) with the result instead of
            allocating; on the CPU this saves the first-touch page faults of a fresh array.

    Returns:
        The observed images in electrons (``images`` itself when ``inplace``). Shape:
        ``b c h w`` (float32).

    Raises:
        BlissShapeError: ``sky_electrons`` does not match ``images``.
        BlissValueError: ``noise`` is not one of the three models.
    """
    sizes = check_shape("images", images, "b c h w")
    check_shape("sky_electrons", sky_electrons, "b c", sizes)
    try:
        model = NoiseModel(noise)
    except ValueError as err:
        raise BlissValueError(
            f"noise={noise!r}; expected one of {[m.value for m in NoiseModel]}."
        ) from err
    if model == NoiseModel.POISSON and images.device.type == "cpu":
        # numpy's exact sampler with a tabulated sky is ~3x faster than torch.poisson on CPU
        seed = int(torch.randint(2**62, (1,), generator=generator))
        light = images.detach().numpy()
        counts = add_sky_and_noise(
            light,
            sky_electrons.detach().cpu().double().numpy(),
            model,
            np.random.default_rng(seed),
            out=light if inplace else None,
        )
        return images if inplace else torch.from_numpy(counts)
    sky = rearrange(sky_electrons.to(images), "b c -> b c 1 1")
    if model == NoiseModel.POISSON:
        counts = torch.poisson((images + sky).clamp_min_(0.0), generator=generator)
        return images.copy_(counts) if inplace else counts
    on_cpu = images.device.type == "cpu"
    if inplace:
        observed = images
    elif on_cpu:
        observed = _numpy_backed(np.empty(images.shape, images.detach().numpy().dtype))
    else:
        observed = torch.empty_like(images, memory_format=torch.contiguous_format)
    if model == NoiseModel.NONE:
        return torch.add(images, sky, out=observed).clamp_min_(0.0)
    # image by image on the CPU, where the temporaries then stay in cache (2x faster)
    pieces = zip(images, sky, observed, strict=True) if on_cpu else [(images, sky, observed)]
    for image, image_sky, out in pieces:
        gaussian_counts_(torch.add(image, image_sky, out=out).clamp_min_(0.0), generator)
    return observed
