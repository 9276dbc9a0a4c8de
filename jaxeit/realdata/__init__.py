"""Real-data pipelines: tank meshes, calibration, difference/absolute imaging, KTC2023 scoring, KIT4 photos."""

from .calibrate import (Calibration, ElectrodeWidthFit, calibrate, calibrate_dataset, calibrate_dataset_cached,
                        fit_electrode_widths, fit_geometry, forward_model, si_protocol)
from .tanks import (electrode_angles, electrode_permutation, kit4_mesh, ktc_mesh, permute_protocol,
                    relabel_electrodes, stretch_electrodes, tank_mesh)

__all__ = ["Calibration", "ElectrodeWidthFit", "calibrate", "calibrate_dataset", "calibrate_dataset_cached",
           "fit_electrode_widths", "fit_geometry", "forward_model", "si_protocol",
           "electrode_angles", "electrode_permutation", "kit4_mesh", "ktc_mesh", "permute_protocol",
           "relabel_electrodes", "stretch_electrodes", "tank_mesh"]
