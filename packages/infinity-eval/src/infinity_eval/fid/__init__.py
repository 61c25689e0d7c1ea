"""FID: the TF-graph InceptionV3 pool3 features, pytorch-fid / clean-fid input protocols, Fréchet distance."""

from .api import FIDOptions, FIDResult, compute_fid, compute_statistics, default_cache_dir
from .checkpoint import FIDBackbone, load_fid_inception, resolve_fid_weights, state_dict_from_tf_names
from .features import FID_PROTOCOLS, extract_features, preprocess_image
from .frechet import FeatureStatistics, frechet_distance, trace_sqrt_product_eig
from .inception import FEATURE_DIM, FIDInceptionV3

__all__ = [
    "FEATURE_DIM",
    "FID_PROTOCOLS",
    "FIDBackbone",
    "FIDInceptionV3",
    "FIDOptions",
    "FIDResult",
    "FeatureStatistics",
    "compute_fid",
    "compute_statistics",
    "default_cache_dir",
    "extract_features",
    "frechet_distance",
    "load_fid_inception",
    "preprocess_image",
    "resolve_fid_weights",
    "state_dict_from_tf_names",
    "trace_sqrt_product_eig",
]
