"""Tiny timm image towers for the SigLIP- and MobileCLIP-shaped test models, registered with timm when this module
is imported -- the way a user's own package registers an architecture.  A bench worker that rebuilds such a model
imports this module too (``edgeclip.models.factory.timm_registrar``), as it would the user's package."""

from functools import partial

from timm.models import is_model, register_model
from timm.models.fastvit import RepConditionalPosEnc, _create_fastvit
from timm.models.vision_transformer import _create_vision_transformer

SIGLIP_TRUNK = "edgeclip_test_siglip_tiny"
MCI_TRUNK = "edgeclip_test_mci_tiny"
FASTVIT_KW = dict(layers=(1, 1, 1, 2), embed_dims=(16, 16, 32, 64), mlp_ratios=(2, 2, 2, 2), num_classes=3)


def edgeclip_test_siglip_tiny(pretrained=False, **kwargs):
    """SigLIP's ViT trunk (no class token, attention-pool head) at tiny widths."""
    args = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, class_token=False, global_pool="map")
    return _create_vision_transformer("vit_base_patch16_siglip_224", pretrained=False, **{**args, **kwargs})


def edgeclip_test_mci_tiny(pretrained=False, **kwargs):
    """MobileCLIP's MCi image tower (timm's fastvit_mci0 settings: RepMixer stages, an attention stage with
    a conditional position encoding, SE downsamples) at tiny widths and one or two blocks per stage."""
    args = dict(FASTVIT_KW, se_downsamples=(False, False, True, True), lkc_use_act=True,
                pos_embs=(None, None, None, partial(RepConditionalPosEnc, spatial_shape=(7, 7))),
                token_mixers=("repmixer", "repmixer", "repmixer", "attention"))
    return _create_fastvit("fastvit_mci0", pretrained=False, **{**args, **kwargs})


for _fn in (edgeclip_test_siglip_tiny, edgeclip_test_mci_tiny):
    if not is_model(_fn.__name__):
        register_model(_fn)
