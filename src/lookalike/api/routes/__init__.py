"""One router per resource. Order matters: ``item_detail`` ends in a catch-all ``{item_id:item}``
(ids may contain '/'), so it is included last."""
from lookalike.api.routes import (catalogs, evaluation, explore, health, item_detail, items, latent, search,
                                   shop, writes)

ROUTERS = [health.router, catalogs.router, items.router, search.router, latent.router, explore.router,
           shop.router, evaluation.router, writes.router, item_detail.router]
