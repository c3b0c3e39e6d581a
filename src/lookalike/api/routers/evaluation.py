"""(wired when the evaluation feature lands)"""
from fastapi import APIRouter

router = APIRouter(tags=["evaluation"])
