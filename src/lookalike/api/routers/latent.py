"""(wired when the latent feature lands)"""
from fastapi import APIRouter

router = APIRouter(tags=["latent"])
