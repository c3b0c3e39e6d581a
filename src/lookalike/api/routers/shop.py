"""(wired when the shop feature lands)"""
from fastapi import APIRouter

router = APIRouter(tags=["shop"])
