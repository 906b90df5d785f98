//! Owned `mlx_vector_array`, used to pass and receive lists of arrays.

use super::array::Array;
use super::sys;
use crate::Result;

pub(crate) struct VectorArray(sys::mlx_vector_array);

impl VectorArray {
    pub fn new() -> VectorArray {
        VectorArray(unsafe { sys::mlx_vector_array_new() })
    }

    pub fn from_arrays(arrays: &[&Array]) -> VectorArray {
        let raws: Vec<sys::mlx_array> = arrays.iter().map(|a| a.raw()).collect();
        VectorArray(unsafe { sys::mlx_vector_array_new_data(raws.as_ptr(), raws.len()) })
    }

    pub fn raw(&self) -> sys::mlx_vector_array {
        self.0
    }

    pub fn raw_mut(&mut self) -> *mut sys::mlx_vector_array {
        &mut self.0
    }

    pub fn len(&self) -> usize {
        unsafe { sys::mlx_vector_array_size(self.0) }
    }

    /// Copies out the handles (each one owned by the returned `Array`).
    pub fn into_vec(self) -> Result<Vec<Array>> {
        (0..self.len())
            .map(|i| {
                let mut raw = unsafe { sys::mlx_array_new() };
                let rc = unsafe { sys::mlx_vector_array_get(&mut raw, self.0, i) };
                let a = Array::from_raw(raw);
                super::status::check(rc).map(|_| a)
            })
            .collect()
    }
}

impl Drop for VectorArray {
    fn drop(&mut self) {
        unsafe { sys::mlx_vector_array_free(self.0) };
    }
}
